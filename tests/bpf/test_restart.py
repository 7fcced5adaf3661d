"""Restart and upgrade: pinned links keep forwarding while the dataplane is dead, a new process
swaps its programs in atomically, and map layout changes are migrated, never silently reused."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
from dataclasses import asdict

import pytest
from novanet_ebpf_policy.program import FROM_POD, TO_POD

from tests.bpf.topo import Topology, ping
from tests.support.ping import PingWatch

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.bpf]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def start_runner(topo: Topology) -> tuple[subprocess.Popen[str], dict]:
    spec = {"config": topo.config(), "settings": topo.settings(),
            "endpoints": [asdict(p.endpoint(topo.gateway)) for p in topo.pods.values()]}
    proc = subprocess.Popen(["nsenter", f"--net=/run/netns/{topo.node}", sys.executable, "-m", "tests.bpf.dp_runner",
                             json.dumps(spec)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("READY "):
        proc.kill()
        proc.wait()
        raise AssertionError(f"runner failed: {line!r}")
    return proc, json.loads(line[6:])


def kill(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
def test_dataplane_killed_and_restarted_twice_under_ping_loses_nothing(topo: Topology) -> None:
    a, b = topo.pods["a"], topo.pods["b"]
    procs = []
    try:
        p1, info1 = start_runner(topo)
        procs.append(p1)
        assert ping(a, b.ip, count=2)[1] == 2
        watch = PingWatch(a.popen, b.ip, interval=0.01)
        try:
            watch.wait_replies(50)
            kill(p1)  # no cleanup at all: pinned links and maps carry the traffic
            watch.mark(ahead=50)
            p2, info2 = start_runner(topo)
            procs.append(p2)
            kill(p2)
            p3, info3 = start_runner(topo)
            procs.append(p3)
            last = watch.mark(ahead=50)
            watch.wait_replied(last)
        finally:
            watch.stop()
        assert last > 150 and watch.lost(last) == [], watch.lost(last)[:20]
        assert info1["endpoints"] == info2["endpoints"] == info3["endpoints"]
        ids = [{(lk["interface"], lk["direction"]): lk["link_id"] for lk in i["links"]} for i in (info1, info2, info3)]
        assert ids[0] == ids[1] == ids[2]  # the same links, re-opened, not replaced
        progs = [{lk["prog_id"] for lk in i["links"]} for i in (info1, info3)]
        assert progs[0].isdisjoint(progs[1])  # ... carrying the new program version
        assert {info3["programs"][n] for n in (FROM_POD, TO_POD)} == progs[1]
    finally:
        for p in procs:
            kill(p)


def test_program_swap_under_traffic_loses_nothing(topo: Topology, datapath) -> None:
    a, b = topo.pods["a"], topo.pods["b"]
    assert ping(a, b.ip, count=1)[1] == 1
    first = {lk["prog_id"] for lk in datapath.links()}
    watch = PingWatch(a.popen, b.ip, interval=0.01)
    swaps = []
    try:
        watch.wait_replies(20)
        first_seq = watch.mark()
        for _ in range(5):
            swaps.append(datapath.reload()["swapped"])
        last = watch.mark(ahead=50)
        watch.wait_replied(last)
    finally:
        watch.stop()
    assert last - first_seq >= 50 and watch.lost(last) == [], watch.lost(last)[:20]
    assert all(len(s) == 2 * len(topo.pods) for s in swaps)
    assert first.isdisjoint({lk["prog_id"] for lk in datapath.links()})


def test_stale_links_removed_on_start(topo: Topology) -> None:
    p1, info1 = start_runner(topo)
    kill(p1)
    c = topo.pods["c"]
    from tests.bpf.topo import sh

    sh("ip", "netns", "del", c.ns)  # the veth pair goes with it: its links are now defunct
    del topo.pods["c"]
    p2, info2 = start_runner(topo)
    kill(p2)
    assert sorted(info2["last_start"]["stale_removed"]) == [f"{c.host_if}_egress", f"{c.host_if}_ingress"]
    assert not os.path.exists(os.path.join(topo.bpf_root, "links", f"{c.host_if}_ingress"))
    assert ping(topo.pods["a"], topo.pods["b"].ip, count=2)[1] == 2


def test_schema_mismatch_is_migrated_not_reused(topo: Topology) -> None:
    from novanet_ebpf_policy.backend import EbpfDatapath
    from novanet_ebpf_policy.layouts import MAPS, PolicyKey, PolicyValue

    from novanet_core.backends import BackendContext
    from novanet_core.bpf import bpffs, netns, pinned, syscall
    from novanet_core.config.models import NovaNetConfig

    a, b = topo.pods["a"], topo.pods["b"]
    mdir = os.path.join(topo.bpf_root, "maps")
    bpffs.ensure_dir(mdir)
    # 1) the current path holds the ORIGINAL NovaNet endpoints layout (value 20 B): BCC would reuse it
    old_ep = syscall.map_create(syscall.MAP_TYPES["hash"], 4, 20, 65536, name="endpoints")
    for p in (a, b):
        ip = int.from_bytes(bytes(map(int, p.ip.split("."))), "big")
        val = ctypes.create_string_buffer(20)
        ctypes.memmove(val, (99).to_bytes(4, "little"), 4)
        ctypes.memmove(ctypes.addressof(val) + 4, bytes.fromhex(p.mac.replace(":", "")), 6)
        ctypes.memmove(ctypes.addressof(val) + 12, p.identity.to_bytes(4, "little"), 4)
        syscall.map_update(old_ep, ip.to_bytes(4, "little"), val.raw)
    syscall.obj_pin(old_ep, os.path.join(mdir, "endpoints_v1"))
    os.close(old_ep)
    # 2) an older layout version of policies with one entry, same schema: copied over
    old_pol = syscall.map_create(syscall.MAP_TYPES["hash"], 12, 4, 65536, name="policies")
    pk = PolicyKey(src_identity=a.identity, dst_identity=b.identity, protocol=1, dst_port=0)
    syscall.map_update(old_pol, bytes(pk), bytes(PolicyValue(action=0)))
    syscall.obj_pin(old_pol, os.path.join(mdir, "policies_v0"))
    os.close(old_pol)

    cfg = NovaNetConfig.model_validate(topo.config())
    with netns.netns(topo.node):
        dp = EbpfDatapath(BackendContext(config=cfg, component="dataplane"))
        dp.start()
        try:
            migs = {m["map"]: m for m in dp.last_start["migrations"]}
            assert migs["endpoints"]["copied"] == 2 and "does not match" in migs["endpoints"]["reason"]
            assert migs["policies"]["copied"] == 1
            info = pinned.pinned_info(os.path.join(topo.bpf_root, "endpoints"))  # alias -> new map
            assert info is not None and MAPS["endpoints"].spec.matches(info)
            assert sorted(os.listdir(mdir)) == sorted(f"{n}_v{m.spec.version}" for n, m in MAPS.items())
            eps = {e["ip"]: e for e in dp.list_endpoints()}
            assert (eps[a.ip]["identity"], eps[a.ip]["mac"], eps[a.ip]["ifindex"]) == (a.identity, a.mac, 99)
            assert dp.list_policies() == [{"src_identity": a.identity, "dst_identity": b.identity, "protocol": 1,
                                           "dst_port": 0, "action": "DENY"}]
            dp.configure(topo.settings())
            for p in topo.pods.values():
                dp.upsert_endpoint(p.endpoint(topo.gateway))
            assert ping(b, a.ip, count=2)[1] == 2
            assert ping(a, b.ip, count=2, deadline=3)[1] == 0  # the migrated deny entry is honoured
        finally:
            dp.stop()
