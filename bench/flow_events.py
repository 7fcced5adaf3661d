"""Flow events: live consumer throughput with filters on, and the CPU cost of flow export.

  python -m bench.flow_events [--seconds 5] [--json]        (root; a few min)
  python -m bench.flow_events --profile                      (only step 0)

The producer is the real datapath program: BPF_PROG_TEST_RUN runs nv_from_pod in the kernel on a
packet with pod a's source address that does not arrive on a's veth (a test run has no veth), so
the anti-spoofing check drops every run as NO_IDENTITY with a flow event in the real pinned ring,
at kernel speed, from a thread that holds no GIL while the kernel runs.

0. **Per step** (a full ring): calls per event (cProfile) and CPU per event of reading the ring,
   filtering and making export lines, the per-record forms against the batch forms.
1. **Throughput** (saturated producer): the dataplane's consumer (the bulk reader) with a
   follower applying a Hubble-style filter through the batch filter (from pod a, verdict DENY, protocol UDP, reason
   NO_IDENTITY: every event matches, so the filter does all of its work), against BCC's own
   ring-buffer consumer (what ``open_ring_buffer`` + ``ring_buffer_poll`` run: libbcc's
   ``bpf_new_ringbuf``/``bpf_poll_ringbuf``, a ctypes callback per event that decodes the
   record) on the same ring and producer, in the same run. Every event is accounted: submitted = consumed + still in the ring; lost =
   reservations that found the ring full (counted by the program); follower_dropped = batches a
   full follower queue could not take.
2. **Export CPU at 100 k events/s** (paced producer): CPU time of the consumer thread and of the
   exporter thread (JSON lines to a rotating file plus one socket reader), per /proc/self/task,
   against the consumer alone and against the standard library's RotatingFileHandler writing the
   same lines (the peer). The agent is not on the flow-event path (the dataplane owns the ring).
"""

from __future__ import annotations

import argparse
import cProfile
import ctypes
import json
import logging
import logging.handlers
import os
import pstats
import signal
import socket
import sys
import tempfile
import threading
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from novanet_ebpf_policy.backend import EbpfDatapath
from novanet_ebpf_policy.export import FlowExporter
from novanet_ebpf_policy.flowfilter import F_DPORT, F_SPORT, FlowFilter

from novanet_core.backends import BackendContext
from novanet_core.bpf import bpffs
from novanet_core.bpf.netns import netns
from novanet_core.config.models import NovaNetConfig
from tests.bpf import progrun
from tests.bpf.topo import Topology

CLK_TCK = os.sysconf("SC_CLK_TCK")


class Producer:
    """Runs nv_from_pod ``repeat`` times per bpf(2) call, in its own thread."""

    def __init__(self, prog_fd: int, pkt: bytes, repeat: int, calls_per_second: float | None = None):
        self.prog_fd, self.pkt, self.repeat, self.rate = prog_fd, pkt, repeat, calls_per_second
        self.runs = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _once(self) -> None:
        progrun.run(self.prog_fd, self.pkt, self.repeat)
        self.runs += self.repeat

    def _run(self) -> None:
        t0 = time.monotonic()
        n = 0
        while not self._stop.is_set():
            if self.rate is not None:
                wait = t0 + n / self.rate - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            self._once()
            n += 1

    def start(self) -> Producer:
        self._t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._t.join()


def thread_cpu(native_id: int | None) -> float:
    if native_id is None:
        return 0.0
    with open(f"/proc/self/task/{native_id}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def counters(dp: EbpfDatapath) -> dict[str, int]:
    return dp.flow_counters()


def wait_drained(dp: EbpfDatapath, base: dict[str, int], timeout: float = 30) -> None:
    """Until our consumer has read everything submitted since ``base``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        c = counters(dp)
        if c["consumed"] - base["consumed"] >= c["submitted"] - base["submitted"]:
            return
        time.sleep(0.005)


class Follower:
    """A filtering follower in its own thread: what `flows -f --from-pod ...` does per event."""

    def __init__(self, dp: EbpfDatapath, flt: FlowFilter):
        self.dp = dp
        self.q, _ = dp.flows.subscribe()
        self.select = flt.compile_batch(dp.flows.names, dp.flows.wall_offset)
        self.seen = self.matched = 0
        self._stop = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self) -> None:
        select = self.select
        while not self._stop.is_set():
            try:
                batch = self.q.get(timeout=0.05)
            except Exception:
                continue
            self.matched += len(select(batch))
            self.seen += len(batch)

    def stop(self) -> None:
        self._stop.set()
        self.t.join()
        self.dp.flows.unsubscribe(self.q)


def drain_with_filter(dp: EbpfDatapath, prog_fd: int, pkt: bytes, flt: FlowFilter, cycles: int) -> dict[str, Any]:
    """The consumer's capacity without a producer competing for the CPUs: fill the ring with the
    consumer stopped, then time consumer + filtering follower until both are through."""
    total = matched = lost = 0
    busy = cpu = 0.0
    for _ in range(cycles):
        dp.flows.stop()
        c0 = counters(dp)
        Producer(prog_fd, pkt, repeat=120000)._once()  # more than the ring holds: it fills
        c1 = counters(dp)
        backlog = c1["submitted"] - c0["submitted"]
        lost += c1["lost"] - c0["lost"]
        f = Follower(dp, flt)
        t0 = time.perf_counter()
        dp.flows.start(dp.maps.fds["flows"])
        tid = dp.flows._thread.native_id if dp.flows._thread else None
        u0, v0 = thread_cpu(tid), thread_cpu(f.t.native_id)
        while f.seen < backlog and time.perf_counter() - t0 < 30:
            time.sleep(0.0005)
        busy += time.perf_counter() - t0
        cpu += thread_cpu(tid) - u0 + thread_cpu(f.t.native_id) - v0
        f.stop()
        total += backlog
        matched += f.matched
    return {"cycles": cycles, "events": total, "matched": matched, "lost_while_filling": lost,
            "seconds": round(busy, 3), "events_per_s": round(total / busy),
            "consumer_and_follower_cpu_s": round(cpu, 2), "events_per_cpu_s": round(total / cpu) if cpu else None}


def throughput_ours(dp: EbpfDatapath, prog_fd: int, pkt: bytes, flt: FlowFilter, seconds: float) -> dict[str, Any]:
    """Saturated producer and our consumer + a filtering follower, all live at once."""
    f = Follower(dp, flt)
    tid = dp.flows._thread.native_id if dp.flows._thread else None
    c0 = counters(dp)
    b0 = dp.flows.batches
    u0, v0 = thread_cpu(tid), thread_cpu(f.t.native_id)
    t0 = time.monotonic()
    prod = Producer(prog_fd, pkt, repeat=20000).start()
    time.sleep(seconds)
    prod.stop()
    t1 = time.monotonic()
    wait_drained(dp, c0)
    cpu = thread_cpu(tid) - u0 + thread_cpu(f.t.native_id) - v0
    while f.seen < counters(dp)["consumed"] - c0["consumed"] and time.monotonic() - t1 < 30:
        time.sleep(0.01)
    f.stop()
    c1 = counters(dp)
    d = {k: c1[k] - c0[k] for k in c1}
    return {"seconds": round(t1 - t0, 2), "produced_runs": prod.runs, "submitted": d["submitted"], "lost": d["lost"],
            "consumed": d["consumed"], "consumed_per_s": round(d["consumed"] / (t1 - t0)),
            "produced_per_s": round(prod.runs / (t1 - t0)),
            "mean_batch": round(d["consumed"] / max(dp.flows.batches - b0, 1)),
            "follower_matched": f.matched, "follower_dropped": d["follower_dropped"],
            "consumer_and_follower_cpu_s": round(cpu, 2),
            "events_per_cpu_s": round(d["consumed"] / cpu) if cpu else None,
            "unaccounted": prod.runs - d["submitted"] - d["lost"]}


def throughput_bcc(dp: EbpfDatapath, prog_fd: int, pkt: bytes, seconds: float) -> dict[str, Any]:
    """BCC's callback consumer on the same pinned ring (ours stopped meanwhile).

    The daemons no longer hold a BCC object (programs are compiled in a helper process), so the
    peer is what ``BPF.open_ring_buffer`` + ``ring_buffer_poll`` run underneath: libbcc's
    ``bpf_new_ringbuf``/``bpf_poll_ringbuf`` on the map's fd, with a ctypes callback per event.
    """
    from bcc.libbcc import _RINGBUF_CB_TYPE, lib
    from novanet_ebpf_policy.flows import EVENT_POLICY

    dp.flows.stop()
    got = [0]

    def cb(_ctx: Any, data: Any, size: int) -> int:
        EVENT_POLICY.unpack(ctypes.string_at(data, EVENT_POLICY.size))
        got[0] += 1
        return 0

    fn = _RINGBUF_CB_TYPE(cb)
    rb = lib.bpf_new_ringbuf(dp.maps.fds["flows"], fn, None)
    if not rb:
        dp.flows.start(dp.maps.fds["flows"])
        raise RuntimeError("libbcc bpf_new_ringbuf failed")
    try:
        c0 = counters(dp)
        me = threading.get_native_id()
        u0 = thread_cpu(me)
        t0 = time.monotonic()
        prod = Producer(prog_fd, pkt, repeat=20000).start()
        # libbpf's poll drains until the ring is empty, so it returns only once the producer is
        # done: the producer stops itself after `seconds`.
        threading.Timer(seconds, prod._stop.set).start()
        while prod._t.is_alive() or not time.monotonic() > t0 + seconds:
            lib.bpf_poll_ringbuf(rb, 100)
        prod.stop()
        t1 = time.monotonic()
        lib.bpf_consume_ringbuf(rb)  # what is left
        cpu = thread_cpu(me) - u0
        c1 = counters(dp)
    finally:
        lib.bpf_free_ringbuf(rb)
        dp.flows.start(dp.maps.fds["flows"])
    sub, lost = c1["submitted"] - c0["submitted"], c1["lost"] - c0["lost"]
    return {"seconds": round(t1 - t0, 2), "submitted": sub, "lost": lost, "consumed": got[0],
            "consumed_per_s": round(got[0] / (t1 - t0)), "consumer_cpu_s": round(cpu, 2),
            "events_per_cpu_s": round(got[0] / cpu) if cpu else None}


def export_cost(dp: EbpfDatapath, prog_fd: int, pkt: bytes, seconds: float, rate: int, mode: str,
                tmp: str) -> dict[str, Any]:
    """CPU of the consumer (+ exporter) threads at ``rate`` events/s; mode none|ours|logging."""
    exp = None
    handler = None
    wt: threading.Thread | None = None
    reader = None
    thread_ids: list[int | None] = [dp.flows._thread.native_id if dp.flows._thread else None]
    stop = threading.Event()
    written = [0]
    if mode == "ours":
        sock = os.path.join(tmp, "flows.sock")
        exp = FlowExporter(dp.flows, os.path.join(tmp, "flows.jsonl"), 64 << 20, 2, sock)
        exp.start()
        thread_ids += [t.native_id for t in exp._threads]
        reader = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        reader.connect(sock)

        def read() -> None:
            while not stop.is_set():
                try:
                    reader.recv(1 << 20)
                except OSError:
                    return

        threading.Thread(target=read, daemon=True).start()
    elif mode == "logging":
        logger = logging.getLogger(f"bench-flows-{os.getpid()}")
        logger.propagate = False
        handler = logging.handlers.RotatingFileHandler(os.path.join(tmp, "flows-logging.jsonl"), maxBytes=64 << 20,
                                                       backupCount=2)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        q, _ = dp.flows.subscribe()

        def write() -> None:
            while not stop.is_set():
                try:
                    batch = q.get(timeout=0.2)
                except Exception:
                    continue
                for t in batch:
                    logger.info(json.dumps(dp.flows._dict(t), separators=(",", ":")))
                written[0] += len(batch)

        wt = threading.Thread(target=write, daemon=True)
        wt.start()
        time.sleep(0.1)
        thread_ids.append(wt.native_id)
    cpu0 = [thread_cpu(t) for t in thread_ids]
    c0 = counters(dp)
    t0 = time.monotonic()
    prod = Producer(prog_fd, pkt, repeat=1000, calls_per_second=rate / 1000).start()
    time.sleep(seconds)
    prod.stop()
    wait_drained(dp, c0)
    target = counters(dp)["consumed"] - c0["consumed"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # until the sink has written every event (its CPU is the cost)
        done = exp.stats()["exported"] if exp else written[0] if mode == "logging" else target
        if done >= target:
            break
        time.sleep(0.01)
    t1 = time.monotonic()
    cpu1 = [thread_cpu(t) for t in thread_ids]
    c1 = counters(dp)
    stop.set()
    exported = exp.stats()["exported"] if exp else None
    if exp:
        exp.stop()
    if reader:
        reader.close()
    if mode == "logging":
        dp.flows.unsubscribe(q)
        if wt is not None:
            wt.join(5)  # the writer finishes its line before the file is closed
        handler.close()
    elapsed = t1 - t0
    per = [round(100 * (b - a) / elapsed, 1) for a, b in zip(cpu0, cpu1, strict=True)]
    consumed = c1["consumed"] - c0["consumed"]
    return {"mode": mode, "events": consumed, "events_per_s": round(consumed / elapsed),
            "lost": c1["lost"] - c0["lost"], "follower_dropped": c1["follower_dropped"] - c0["follower_dropped"],
            "consumer_cpu_pct": per[0], "export_cpu_pct": round(sum(per[1:]), 1), "exported": exported,
            "us_per_event_export": round(1e6 * sum((b - a) for a, b in zip(cpu0[1:], cpu1[1:], strict=True))
                                         / max(consumed, 1), 2)}


def _calls(fn: Any) -> tuple[Any, int]:
    """``fn()`` under cProfile: its result and the calls the interpreter dispatched (Python
    functions and C functions called from Python; C-to-C calls inside ``map`` are not dispatched)."""
    pr = cProfile.Profile()
    pr.enable()
    out = fn()
    pr.disable()
    return out, sum(v[1] for v in pstats.Stats(pr).stats.values())  # type: ignore[attr-defined]


def _cpu(fn: Any) -> tuple[Any, float]:
    c0 = time.thread_time()
    out = fn()
    return out, time.thread_time() - c0


def per_event_calls(dp: EbpfDatapath, prog_fd: int, pkt: bytes, flt: FlowFilter) -> dict[str, Any]:
    """Per event, for each step of the flow-event path (reading a full ring, filtering, export
    lines): the calls dispatched (cProfile) and the CPU time (without the profiler, min of 3),
    the per-record forms against the batch forms on the same events in the same run."""
    from novanet_ebpf_policy.flows import EVENT_POLICY, LineEncoder

    from novanet_core.bpf.ringbuf import RingBuffer

    dp.flows.stop()
    rb = RingBuffer(dp.maps.fds["flows"])
    out: dict[str, Any] = {}

    def read(name: str, batch: list[Any], measure: Any) -> tuple[int, Any]:
        progrun.run(prog_fd, pkt, 120000)  # more than the ring holds: it fills (not measured)
        if name == "per_record":
            return measure(lambda: rb.drain(EVENT_POLICY.unpack_from, batch))
        return measure(lambda: rb.drain_fixed(EVENT_POLICY, batch))

    try:
        for name in ("per_record", "bulk"):
            batch: list[Any] = []
            cpu = min(read(name, [], _cpu)[1] for _ in range(3))
            n, calls = read(name, batch, _calls)
            out[f"read_{name}"] = {"events": n, "calls_per_event": round(calls / n, 3),
                                   "cpu_ns_per_event": round(cpu / n * 1e9)}
        names, wall = dp.flows.names, dp.flows.wall_offset
        pred, select = flt.compile(names, wall), flt.compile_batch(names, wall)
        enc = LineEncoder(dp.flows)
        todict = dp.flows._dict
        # the same events with every port pair distinct: no export line repeats (the cache misses)
        distinct = [(*t[:F_SPORT], i & 0xFFFF, i >> 16, *t[F_DPORT + 1:]) for i, t in enumerate(batch)]
        steps = {"filter_per_event": lambda: [t for t in batch if pred(t)],
                 "filter_batch": lambda: select(batch),
                 "export_json_dumps_to_dict": lambda: "".join([json.dumps(todict(t), separators=(",", ":")) + "\n"
                                                               for t in batch]),
                 "export_line_encoder_batch": lambda: enc.lines(batch),
                 "export_line_encoder_batch_distinct": lambda: enc.lines(distinct)}
        for name, fn in steps.items():
            cpu = min(_cpu(fn)[1] for _ in range(3))
            got, calls = _calls(fn)
            out[name] = {"events": len(batch), "calls_per_event": round(calls / len(batch), 3),
                         "cpu_ns_per_event": round(cpu / len(batch) * 1e9)}
            if name.startswith("filter"):
                out[name]["matched"] = len(got)
    finally:
        rb.close()
        dp.flows.start(dp.maps.fds["flows"])
    return out


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--rate", type=int, default=100_000)
    ap.add_argument("--cycles", type=int, default=10, help="fill-and-drain cycles of the ring (~95 k events each)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--profile", action="store_true", help="only the calls per event of each step (cProfile)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/flow_events.py needs root (netns, BPF)")
    bpffs.ensure_mounted()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # so that the topology is removed (finally)
    topo = Topology().create(n_pods=1)
    result: dict[str, Any] = {"kernel": os.uname().release, "cpus": os.cpu_count()}
    try:
        cfg = NovaNetConfig.model_validate(topo.config())
        with netns(topo.node), tempfile.TemporaryDirectory(prefix="nv-flowbench-") as tmp:
            dp = EbpfDatapath(BackendContext(config=cfg, component="dataplane"))
            say("compiling and loading the datapath")
            dp.start()
            try:
                dp.configure(topo.settings())
                a = topo.pods["a"]
                dp.upsert_endpoint(a.endpoint(topo.gateway))
                fd = dp.prog.fds["nv_from_pod"]
                # a's address, but not from a's veth: every run is a NO_IDENTITY drop with an event
                pkt = progrun.udp_packet(a.mac, a.ip, "10.42.0.200")
                flt = FlowFilter.from_params({"from_pod": "default/a", "verdict": "DENY", "protocol": "UDP",
                                              "reasons": ["NO_IDENTITY"]})
                say("calls per event of each step (cProfile)")
                result["per_event"] = per_event_calls(dp, fd, pkt, flt)
                if args.profile:
                    print(json.dumps(result, indent=2))
                    return
                say("throughput: the dataplane's consumer with a filtering follower")
                ours = throughput_ours(dp, fd, pkt, flt, args.seconds)
                say("throughput: draining a full ring with a filtering follower")
                drain = drain_with_filter(dp, fd, pkt, flt, args.cycles)
                say("throughput: BCC's callback consumer")
                result["throughput"] = {"ours_filtered": ours, "drain_filtered": drain,
                                        "bcc_callback": throughput_bcc(dp, fd, pkt, args.seconds)}
                t = result["throughput"]
                t["ratio_ours_vs_bcc"] = round(t["ours_filtered"]["consumed_per_s"]
                                               / max(t["bcc_callback"]["consumed_per_s"], 1), 2)
                result["export_at_rate"] = []
                for m in ("none", "ours", "logging"):
                    say(f"export at {args.rate} ev/s: {m}")
                    result["export_at_rate"].append(export_cost(dp, fd, pkt, args.seconds, args.rate, m, tmp))
            finally:
                dp.stop()
    finally:
        topo.destroy()
    if args.json:
        print(json.dumps(result, indent=2))
        return
    t = result["throughput"]
    o, b = t["ours_filtered"], t["bcc_callback"]
    print(f"kernel {result['kernel']}, {result['cpus']} CPUs")
    print(f"consumer with a filtering follower: {o['consumed_per_s']:,} ev/s consumed (submitted {o['submitted']:,}, "
          f"lost {o['lost']:,}, follower matched {o['follower_matched']:,}, follower dropped "
          f"{o['follower_dropped']:,}, unaccounted {o['unaccounted']})")
    dr = t["drain_filtered"]
    print(f"  its CPU: {o['consumer_and_follower_cpu_s']} s (consumer + follower) = {o['events_per_cpu_s']:,} events per "
          f"CPU-second")
    print(f"draining a full ring, filtering follower: {dr['events_per_s']:,} ev/s over {dr['events']:,} events "
          f"({dr['events_per_cpu_s']:,} per CPU-second, {dr['matched']:,} matched)")
    print(f"BCC callback consumer: {b['consumed_per_s']:,} ev/s (lost {b['lost']:,}), {b['events_per_cpu_s']:,} per "
          f"CPU-second; ratio ours/BCC (live ev/s) {t['ratio_ours_vs_bcc']}")
    for e in result["export_at_rate"]:
        print(f"export {e['mode']:8s} at {e['events_per_s']:,} ev/s: consumer {e['consumer_cpu_pct']} % CPU, "
              f"export {e['export_cpu_pct']} % CPU ({e['us_per_event_export']} us/event), lost {e['lost']}, "
              f"not taken {e['follower_dropped']}")


if __name__ == "__main__":
    main()
