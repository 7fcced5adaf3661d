"""Generic BPF utilities shared by every BPF-using plugin.

* :mod:`.syscall`  raw ``bpf(2)`` commands via ctypes (pins, info, tcx links, map iteration)
* :mod:`.bpffs`    mounting bpffs and managing pin directories
* :mod:`.ktree`    the fake kernel header tree BCC compiles against on header-less hosts
* :mod:`.netns`    entering a network namespace from a thread
* :mod:`.stats`    per-program run_cnt / run_time_ns from fdinfo; per-CPU event counters
* :mod:`.ringbuf`  an mmap ring-buffer consumer (no per-event C callback)
* :mod:`.pinned`   schema checks and versioned pins for maps BCC reuses blindly
* :mod:`.programs` a plugin's C source with its generated prelude, compile+load, program pins
* :mod:`.compiler` the short-lived helper process that compiles and loads (no daemon maps LLVM)
* :mod:`.tunnel`   what every BPF tunnel plugin shares (programs, tunnels map, routes, backend base)
"""
