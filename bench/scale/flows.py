"""Flow table: entries vs map memory and the per-packet cost of an established flow, up to the
map's limit.

The table is filled with synthetic flows (both directions, as the datapath inserts them) written
straight into the pinned ``ct`` map, then one real flow (the 64-byte UDP flood of
``bench.bpf_datapath``) is measured with bpf stats among them. The memory is the kernel's own
account of the map (fdinfo ``memlock``). Needs root; runs on a throwaway netns topology.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any

from novanet_ebpf_policy.backend import EbpfDatapath
from novanet_ebpf_policy.layouts import ConfigKey, FlowKey, FlowState

from bench.bpf_datapath import per_packet
from novanet_core.backends import BackendContext
from novanet_core.bpf import bpffs, stats, syscall
from novanet_core.bpf.netns import netns
from novanet_core.config.models import NovaNetConfig
from tests.bpf.topo import Topology

STEPS = (0, 1000, 8000, 32000, 60000)


def _fill(fd: int, start: int, count: int, revision: int) -> None:
    """``count`` flows (two entries each) from 198.18.x.y, so they never match real traffic."""
    for i in range(start, start + count):
        k = FlowKey(src_ip=0xC6120000 + i, dst_ip=0xC6130000 + (i % 251), src_port=1024 + i % 50000, dst_port=80,
                    protocol=6)
        r = FlowKey(src_ip=k.dst_ip, dst_ip=k.src_ip, src_port=80, dst_port=k.src_port, protocol=6)
        st = FlowState()
        if hasattr(st, "policy_revision"):
            st.policy_revision = revision
        syscall.map_update(fd, bytes(k), bytes(st))
        syscall.map_update(fd, bytes(r), bytes(st))


def run(steps: tuple[int, ...] = STEPS, seconds: int = 3) -> dict[str, Any]:
    bpffs.ensure_mounted()
    topo = Topology().create(n_pods=2)
    rows = []
    try:
        cfg = NovaNetConfig.model_validate(topo.config())
        with netns(topo.node):
            dp = EbpfDatapath(BackendContext(config=cfg, component="dataplane"))
            dp.start()
            try:
                dp.configure(topo.settings())
                for p in topo.pods.values():
                    dp.upsert_endpoint(p.endpoint(topo.gateway))
                assert dp.maps is not None
                fd = dp.maps.fds["ct"]
                info = syscall.map_info(fd)
                rev = dp.maps.config_get(ConfigKey.POLICY_REVISION)
                limit_flows = info.max_entries // 2 - 2  # leave room for the measured flow's two entries
                have = 0
                for target in steps:
                    target = min(target, limit_flows)
                    _fill(fd, have, target - have, rev)
                    have = target
                    pp = per_packet(dp, topo, seconds)
                    mem = int(stats.fdinfo(fd).get("memlock", 0))
                    entries = sum(1 for _ in syscall.map_keys(fd, ctypes.sizeof(FlowKey)))
                    row = {"flows": target, "entries": entries, "max_entries": info.max_entries,
                           "ct_mib": round(mem / 2**20, 2), "from_pod_ns": pp["nv_from_pod"]["avg_ns"],
                           "to_pod_ns": pp["nv_to_pod"]["avg_ns"], "floor_ns": pp["floor_empty_prog"]["avg_ns"]}
                    rows.append(row)
                    print(f"  {entries} entries ({info.max_entries} max): ct {row['ct_mib']} MiB, nv_from_pod "
                          f"{row['from_pod_ns']} ns (floor {row['floor_ns']})", flush=True)
            finally:
                dp.stop()
    finally:
        topo.destroy()
    return {"rows": rows, "map_type": syscall.MAP_TYPE_NAMES.get(info.type, info.type), "kernel": os.uname().release}
