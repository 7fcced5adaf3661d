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
    """Runs nv_from_pod ``repeat`` times per bpf(2) call, in ``threads`` threads of its own.

    One thread is a single CPU's worth of kernel at best, and on a loaded machine a small share of
    one; several threads (each blocked in the kernel without the GIL) are what it takes to produce
    more than the consumer takes. ``calls_per_second`` paces all of them together.
    """

    def __init__(self, prog_fd: int, pkt: bytes, repeat: int, calls_per_second: float | None = None,
                 threads: int = 1):
        self.prog_fd, self.pkt, self.repeat, self.rate = prog_fd, pkt, repeat, calls_per_second
        self.threads = threads
        self._runs = [0] * threads
        self._cpu = [0.0] * threads  # each thread's own CPU time, kept as it ends
        self._stop = threading.Event()
        self._ts = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    @property
    def runs(self) -> int:
        return sum(self._runs)

    @property
    def cpu_s(self) -> float:
        """CPU seconds the producer threads used (kernel time of the runs included); after stop()."""
        return sum(self._cpu)

    def _once(self, i: int = 0) -> None:
        progrun.run(self.prog_fd, self.pkt, self.repeat)
        self._runs[i] += self.repeat

    def _run(self, i: int) -> None:
        t0 = time.monotonic()
        rate = self.rate / self.threads if self.rate is not None else None
        n = 0
        while not self._stop.is_set():
            if rate is not None:
                wait = t0 + n / rate - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            self._once(i)
            n += 1
        self._cpu[i] = time.thread_time()

    def alive(self) -> bool:
        return any(t.is_alive() for t in self._ts)

    def start(self) -> Producer:
        for t in self._ts:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._ts:
            t.join()


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


def throughput_ours(dp: EbpfDatapath, prog_fd: int, pkt: bytes, flt: FlowFilter, seconds: float,
                    producers: int) -> dict[str, Any]:
    """Saturated producer and our consumer + a filtering follower, all live at once."""
    f = Follower(dp, flt)
    tid = dp.flows._thread.native_id if dp.flows._thread else None
    c0 = counters(dp)
    b0 = dp.flows.batches
    u0, v0 = thread_cpu(tid), thread_cpu(f.t.native_id)
    t0 = time.monotonic()
    prod = Producer(prog_fd, pkt, repeat=20000, threads=producers).start()
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
    return {"seconds": round(t1 - t0, 2), "producer_threads": producers, "produced_runs": prod.runs, "submitted": d["submitted"], "lost": d["lost"],
            "consumed": d["consumed"], "consumed_per_s": round(d["consumed"] / (t1 - t0)),
            "produced_per_s": round(prod.runs / (t1 - t0)),
            "producer_cpu_s": round(prod.cpu_s, 2),
            "produced_per_cpu_s": round(prod.runs / prod.cpu_s) if prod.cpu_s else None,
            "mean_batch": round(d["consumed"] / max(dp.flows.batches - b0, 1)),
            "follower_matched": f.matched, "follower_dropped": d["follower_dropped"],
            "consumer_and_follower_cpu_s": round(cpu, 2),
            "events_per_cpu_s": round(d["consumed"] / cpu) if cpu else None,
            "unaccounted": prod.runs - d["submitted"] - d["lost"]}


def throughput_bcc(dp: EbpfDatapath, prog_fd: int, pkt: bytes, seconds: float, producers: int) -> dict[str, Any]:
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
        prod = Producer(prog_fd, pkt, repeat=20000, threads=producers).start()
        # libbpf's poll drains until the ring is empty, so it returns only once the producer is
        # done: the producer stops itself after `seconds`.
        threading.Timer(seconds, prod._stop.set).start()
        while prod.alive() or not time.monotonic() > t0 + seconds:
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


def proc_cpu(pid: int) -> float:
    """utime + stime of a whole process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def daemons_cost(rate: int, seconds: float) -> dict[str, Any]:
    """The two daemons' CPU at ``rate`` events/s, from /proc/<pid>/stat: a node of its own (real
    novanet-agent and novanet-dataplane processes, flow export to a file and a unix socket with one
    collector reading it), one pod added through the CNI, and the producer running the
    dataplane's own loaded nv_from_pod (found by its program id) on a packet with the pod's
    address that does not come from the pod's veth, so every run is a NO_IDENTITY drop with an
    event in the dataplane's ring. Idle CPU over the same length is measured first and reported
    apart, so that the cost of the events is the difference."""
    from novanet_core.api.client import ApiClient
    from novanet_core.bpf import syscall
    from tests.support.node import NodeUnderTest

    node = NodeUnderTest(datapath="ebpf", pod_cidr="10.42.19.0/24", prefix="fl19")
    sock = str(node.dir / "flows.sock")
    node.set_config({"flows": {"history": 65536, "export": {"file": str(node.dir / "flows.jsonl"),
                                                              "maxBytes": 64 << 20, "backups": 1, "socket": sock}}})
    reader: socket.socket | None = None
    try:
        say("daemons: starting a node (agent + dataplane processes)")
        node.start(wait=300)
        rc, out = node.cni("ADD", f"fl19{node.id}", node.add_pod_netns(), args="K8S_POD_NAMESPACE=default;K8S_POD_NAME=a")
        if rc != 0:
            raise RuntimeError(f"CNI ADD failed: {out}")
        ip = out["ips"][0]["address"].split("/")[0]
        mac = next(i["mac"] for i in out["interfaces"] if i.get("sandbox"))

        def dp_call(method: str) -> Any:
            with ApiClient(node.config["sockets"]["dataplane"], timeout=10) as c:
                return c.call(method, {})

        prog_id = next(p["prog_id"] for p in dp_call("ebpf.status")["programs"] if p["name"] == "nv_from_pod")
        prog_fd = syscall.prog_fd_by_id(prog_id)
        pkt = progrun.udp_packet(mac, ip, "10.42.19.250")
        reader = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        reader.connect(sock)
        lines = [0]

        def collect() -> None:
            assert reader is not None
            while True:
                try:
                    b = reader.recv(1 << 20)
                except OSError:
                    return
                if not b:
                    return
                lines[0] += b.count(b"\n")

        threading.Thread(target=collect, daemon=True).start()
        pids = {name: p.pid for name, p in node.procs.items()}

        def counts() -> dict[str, int]:
            st = dp_call("dp.stats")
            ex = st["export"]
            return {**st["flow_events"], "exported": ex["exported"], "socket_dropped": ex["socket_dropped"],
                    "export_errors": ex["errors"], "collected": lines[0]}

        def window(prod: Producer | None) -> dict[str, Any]:
            """CPU over the paced window, and until every event is accounted for at the collector
            (collected or counted as lost on the way), per event."""
            c0 = counts()
            cpu0 = {n: proc_cpu(p) for n, p in pids.items()}
            t0 = time.monotonic()
            if prod:
                prod.start()
            time.sleep(seconds)
            if prod:
                prod.stop()
            el = time.monotonic() - t0
            cpu1 = {n: proc_cpu(p) for n, p in pids.items()}
            deadline = time.monotonic() + 60
            while prod and time.monotonic() < deadline:
                c = counts()
                d = {k: c[k] - c0[k] for k in c}
                if d["consumed"] >= d["submitted"] and d["exported"] + d["follower_dropped"] >= d["consumed"] \
                        and d["collected"] + d["socket_dropped"] >= d["exported"]:
                    break
                time.sleep(0.01)
            drained = time.monotonic() - t0
            cpu2 = {n: proc_cpu(p) for n, p in pids.items()}
            c1 = counts()
            d = {k: c1[k] - c0[k] for k in c1}
            runs = prod.runs if prod else 0
            return {"seconds": round(el, 2), "accounted_after_s": round(drained, 2), "produced": runs, **d,
                    "produced_per_s": round(runs / el),
                    "unaccounted": runs - d["submitted"] - d["lost"] if prod else 0,
                    "cpu_s_per_s": {n: round((cpu1[n] - cpu0[n]) / el, 3) for n in pids},
                    "cpu_s_per_s_until_accounted": {n: round((cpu2[n] - cpu0[n]) / drained, 3) for n in pids},
                    "cpu_us_per_event": {n: round(1e6 * (cpu2[n] - cpu0[n]) / max(d["consumed"], 1), 2)
                                         for n in pids} if prod else None}

        say("daemons: idle window")
        idle = window(None)
        say(f"daemons: {rate} ev/s window")
        busy = window(Producer(prog_fd, pkt, repeat=1000, calls_per_second=rate / 1000))
        os.close(prog_fd)
        return {"rate": rate, "idle": idle, "at_rate": busy,
                "cost_cpu_s_per_s": {n: round(busy["cpu_s_per_s"][n] - idle["cpu_s_per_s"][n], 3) for n in pids}}
    finally:
        if reader is not None:
            reader.close()
        node.close()


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


STEPS = ("profile", "throughput", "export", "daemons")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--rate", type=int, default=100_000)
    ap.add_argument("--cycles", type=int, default=10, help="fill-and-drain cycles of the ring (~95 k events each)")
    ap.add_argument("--producers", type=int, default=3, help="producer threads of the saturated runs")
    ap.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated subset of {','.join(STEPS)}")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--profile", action="store_true", help="only the calls per event of each step (cProfile)")
    args = ap.parse_args()
    steps = {"profile"} if args.profile else set(args.steps.split(","))
    if steps - set(STEPS):
        sys.exit(f"--steps: unknown {','.join(sorted(steps - set(STEPS)))} (known: {','.join(STEPS)})")
    if os.geteuid() != 0:
        sys.exit("bench/flow_events.py needs root (netns, BPF)")
    bpffs.ensure_mounted()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # so that the topology is removed (finally)
    result: dict[str, Any] = {"kernel": os.uname().release, "cpus": os.cpu_count(),
                              "loadavg_before": os.getloadavg()[0]}
    if steps & {"profile", "throughput", "export"}:
        in_process(args, steps, result)
    if "daemons" in steps:
        result["daemons"] = daemons_cost(args.rate, args.seconds)
    result["loadavg_after"] = os.getloadavg()[0]
    if args.json:
        print(json.dumps(result, indent=2))
        return
    report(result)


def in_process(args: argparse.Namespace, steps: set[str], result: dict[str, Any]) -> None:
    """Steps 0-2, on a datapath loaded by this process in a topology of its own."""
    topo = Topology().create(n_pods=1)
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
                if "profile" in steps:
                    say("calls per event of each step (cProfile)")
                    result["per_event"] = per_event_calls(dp, fd, pkt, flt)
                if "throughput" in steps:
                    say(f"throughput: the dataplane's consumer with a filtering follower, {args.producers} producers")
                    ours = throughput_ours(dp, fd, pkt, flt, args.seconds, args.producers)
                    say("throughput: draining a full ring with a filtering follower")
                    drain = drain_with_filter(dp, fd, pkt, flt, args.cycles)
                    say("throughput: BCC's callback consumer")
                    t = result["throughput"] = {"ours_filtered": ours, "drain_filtered": drain,
                                                "bcc_callback": throughput_bcc(dp, fd, pkt, args.seconds,
                                                                               args.producers)}
                    t["ratio_ours_vs_bcc"] = round(ours["consumed_per_s"] / max(t["bcc_callback"]["consumed_per_s"], 1),
                                                   2)
                if "export" in steps:
                    result["export_at_rate"] = []
                    for m in ("none", "ours", "logging"):
                        say(f"export at {args.rate} ev/s: {m}")
                        result["export_at_rate"].append(export_cost(dp, fd, pkt, args.seconds, args.rate, m, tmp))
            finally:
                dp.stop()
    finally:
        topo.destroy()


def report(result: dict[str, Any]) -> None:
    print(f"kernel {result['kernel']}, {result['cpus']} CPUs, load {result['loadavg_before']:.1f} -> "
          f"{result['loadavg_after']:.1f}")
    if "per_event" in result:
        print(json.dumps(result["per_event"], indent=2))
    if "throughput" in result:
        t = result["throughput"]
        o, b = t["ours_filtered"], t["bcc_callback"]
        print(f"consumer with a filtering follower ({o['producer_threads']} producer threads): {o['consumed_per_s']:,} "
              f"ev/s consumed of {o['produced_per_s']:,} produced (submitted {o['submitted']:,}, lost "
              f"{o['lost']:,}, follower matched {o['follower_matched']:,}, follower dropped "
              f"{o['follower_dropped']:,}, unaccounted {o['unaccounted']})")
        dr = t["drain_filtered"]
        print(f"  its CPU: {o['consumer_and_follower_cpu_s']} s (consumer + follower) = {o['events_per_cpu_s']:,} "
              f"events per CPU-second")
        print(f"draining a full ring, filtering follower: {dr['events_per_s']:,} ev/s over {dr['events']:,} events "
              f"({dr['events_per_cpu_s']:,} per CPU-second, {dr['matched']:,} matched)")
        print(f"BCC callback consumer: {b['consumed_per_s']:,} ev/s (lost {b['lost']:,}), {b['events_per_cpu_s']:,} "
              f"per CPU-second; ratio ours/BCC (live ev/s) {t['ratio_ours_vs_bcc']}")
    for e in result.get("export_at_rate", []):
        print(f"export {e['mode']:8s} at {e['events_per_s']:,} ev/s: consumer {e['consumer_cpu_pct']} % CPU, "
              f"export {e['export_cpu_pct']} % CPU ({e['us_per_event_export']} us/event), lost {e['lost']}, "
              f"not taken {e['follower_dropped']}")
    if "daemons" in result:
        d = result["daemons"]
        r = d["at_rate"]
        print(f"daemons at {r['produced_per_s']:,} ev/s produced: CPU s/s {r['cpu_s_per_s']} (idle "
              f"{d['idle']['cpu_s_per_s']}; cost {d['cost_cpu_s_per_s']}), consumed {r['consumed']:,}, lost "
              f"{r['lost']:,}, exported {r['exported']:,}, collected {r['collected']:,}, socket dropped "
              f"{r['socket_dropped']:,}, follower dropped {r['follower_dropped']:,}")


if __name__ == "__main__":
    main()
