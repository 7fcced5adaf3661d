"""The bulk ring-buffer reader on the real flows ring, fed by the real nv_from_pod.

BPF_PROG_TEST_RUN runs nv_from_pod on a packet with pod a's source address that did not arrive
on a's veth (a test run has none), so each run is a NO_IDENTITY drop with one flow event. One
datapath for the module: compiling it is most of the time.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from novanet_ebpf_policy.flowfilter import F_DPORT, F_REASON, F_SPORT, F_SRC_IP, F_TS, FlowFilter, raw_ip
from novanet_ebpf_policy.flows import EVENT_POLICY
from novanet_ebpf_policy.layouts import DropReason

from novanet_core.bpf.ringbuf import RingBuffer
from tests.bpf import progrun
from tests.bpf.conftest import started_datapath
from tests.bpf.topo import Topology

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.bpf]

SLOT = 88  # 8-byte record header + the 80-byte event


@pytest.fixture(scope="module")
def node() -> Iterator[tuple[Topology, Any]]:
    from novanet_core.bpf import bpffs

    bpffs.ensure_mounted()
    t = Topology()
    try:
        t.create()
        with started_datapath(t) as dp:
            yield t, dp
    finally:
        t.destroy()


@pytest.fixture
def ring(node: tuple[Topology, Any]) -> Iterator[RingBuffer]:
    """The flows ring read by the test alone: the dataplane's consumer is stopped meanwhile."""
    _, dp = node
    dp.flows.stop()
    rb = RingBuffer(dp.maps.fds["flows"])
    try:
        yield rb
    finally:
        rb.close()
        dp.flows.start(dp.maps.fds["flows"])


def _emit(node: tuple[Topology, Any], n: int, sport: int) -> None:
    topo, dp = node
    a = topo.pods["a"]
    progrun.run(dp.prog.fds["nv_from_pod"], progrun.udp_packet(a.mac, a.ip, "10.42.0.200", sport=sport), n)


def test_bulk_reader_decodes_every_event_across_the_wrap(node, ring: RingBuffer) -> None:
    _, dp = node

    def to_end() -> int:
        return (ring.size - ring.consumer_pos % ring.size) // SLOT

    sink: list[tuple] = []
    while to_end() <= 1000:  # the consumer must end up 1000 records before the end of the ring
        _emit(node, 2000, sport=1)
        ring.drain_fixed(EVENT_POLICY, sink)
    first = to_end() - 1000
    _emit(node, first, sport=1)
    assert ring.drain_fixed(EVENT_POLICY, sink) == first
    assert ring.pending_bytes() == 0
    before, c0 = ring.consumer_pos % ring.size, dp.flow_counters()
    _emit(node, 5000, sport=2)
    assert ring.pending_bytes() == 5000 * SLOT
    wrapped: list[tuple] = []
    assert ring.drain_fixed(EVENT_POLICY, wrapped, max_records=3000) == 3000  # a partial drain resumes
    assert ring.drain_fixed(EVENT_POLICY, wrapped) == 2000
    assert ring.consumer_pos % ring.size < before  # it did wrap
    assert dp.flow_counters()["lost"] == c0["lost"]
    a = raw_ip(node[0].pods["a"].ip)
    for t in (sink[-1], *wrapped):
        assert t[F_SRC_IP] == a and t[F_DPORT] == 9 and t[F_REASON] == DropReason.NO_IDENTITY
    assert {t[F_SPORT] for t in wrapped} == {2}
    ts = [t[F_TS] for t in wrapped]
    assert ts == sorted(ts) and len(set(ts)) > 1  # in submission order, none read twice
    assert ring.skipped == 0


def test_a_full_ring_counts_its_losses_and_the_rest_is_read(node, ring: RingBuffer) -> None:
    _, dp = node
    capacity = ring.size // SLOT
    c0 = dp.flow_counters()
    _emit(node, capacity + 700, sport=3)
    c1 = dp.flow_counters()
    submitted, lost = c1["submitted"] - c0["submitted"], c1["lost"] - c0["lost"]
    assert submitted == capacity and lost == 700  # the kernel refuses reservations into a full ring
    got: list[tuple] = []
    assert ring.drain_fixed(EVENT_POLICY, got) == submitted
    assert {t[F_SPORT] for t in got} == {3}
    _emit(node, 10, sport=4)  # space released: reservations succeed again
    more: list[tuple] = []
    assert ring.drain_fixed(EVENT_POLICY, more) == 10
    assert dp.flow_counters()["lost"] == c1["lost"]


def test_the_collector_consumes_and_filters_live_events(node) -> None:
    _, dp = node
    c0 = dp.flow_counters()
    # the matches come from the history or live, depending on when the follower subscribes
    it = dp.flows.follow(limit=100, flt=FlowFilter.from_params({"from_pod": "default/a", "port": 5}))
    _emit(node, 2000, sport=6)
    _emit(node, 3, sport=5)
    got = [next(it) for _ in range(3)]
    it.close()
    assert {(e["src_pod"], e["src_port"], e["drop_reason_name"]) for e in got} == {("default/a", 5, "NO_IDENTITY")}
    c1 = dp.flow_counters()
    assert c1["consumed"] - c0["consumed"] == c1["submitted"] - c0["submitted"] == 2003
    assert c1["skipped"] == c0["skipped"] == 0
