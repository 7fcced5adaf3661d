"""The flow table at capacity fails closed and says so, and recovers when the load falls.

A small table (bpf.flowTableSize 512 entries = 256 flows) filled by a flood of new UDP flows from
one pod: an established ping of two other pods loses nothing during the flood (no eviction), a
new flow started while the table is full is dropped and counted as FLOW_TABLE_FULL (never let
through untracked), the status reports the pressure, and once the flood's flows have idled out
(bpf.flowIdleTimeoutSeconds 2) the sweeper frees them and new flows work again.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.bpf.conftest import started_datapath
from tests.bpf.topo import Topology, ping, wait_for
from tests.support.ping import PingWatch

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.bpf]

SIZE = 512

# New flows as fast as one process makes them: a fresh socket (a fresh source port) per datagram.
_FLOOD = """
import socket, sys
for i in range({n}):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(b"x", ("{ip}", 9))
    s.close()
"""


@pytest.fixture
def small_table(topo: Topology) -> Iterator[object]:
    with started_datapath(topo, flowTableSize=SIZE, flowIdleTimeoutSeconds=2) as dp:
        yield dp


def test_full_flow_table_drops_new_flows_keeps_established_and_recovers(topo: Topology, small_table) -> None:
    dp = small_table
    a, b, c = topo.pods["a"], topo.pods["b"], topo.pods["c"]
    assert dp.status()["flow_table"]["capacity"] == SIZE
    watch = PingWatch(lambda *argv: a.popen(*argv), b.ip, interval=0.02)  # the established flow
    try:
        watch.wait_replies(5)
        before = watch.mark()
        c.run("python3", "-c", _FLOOD.format(n=SIZE, ip=b.ip), timeout=120)  # more flows than the table holds
        full = dp.drop_counters()["FLOW_TABLE_FULL"]
        assert full > 0, dp.drop_counters()
        # A new flow while the table is full: refused, and counted.
        sent, received = ping(c, a.ip, count=2, interval=0.2, deadline=2)
        assert received == 0
        assert dp.drop_counters()["FLOW_TABLE_FULL"] > full
        dp.sweeper.sweep(now_ns=0)  # a sweep that deletes nothing, to read the fill at once
        st = dp.status()["flow_table"]
        print(f"full table: {st}; drops {dp.drop_counters()}")
        assert st["entries"] == SIZE and st["pressure"] is True and st["fullDrops"] > full
        # The established ping never lost a request through the flood.
        upto = watch.mark(ahead=5)
        watch.wait_replied(upto)
        assert watch.lost(upto, start=before) == []
        # Load falls: the flood's flows idle out, the sweeper frees them, new flows work again.
        wait_for(lambda: dp.status()["flow_table"]["entries"] < SIZE // 2, "the sweeper freed nothing")
        assert not dp.status()["flow_table"]["pressure"]
        assert ping(c, a.ip, count=2, interval=0.2, deadline=10)[1] == 2
        upto = watch.mark(ahead=5)
        watch.wait_replied(upto)
        assert watch.lost(upto, start=before) == []  # the established flow was never swept: it is not idle
    finally:
        watch.stop()
