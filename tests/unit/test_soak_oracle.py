"""The chaos soak's ping oracle (tests/support/chaos.py): losses across a bfdd crash on a node
the ping passes are measured and excused only within the bound; every other loss is a violation."""

from __future__ import annotations

from tests.support.chaos import BFDD_LOSS_BOUND_SECONDS, PING_INTERVAL, Soak


def _soak(tmp_path, kills: list[tuple[str, str, int, int]]) -> Soak:
    s = Soak(tmp_path, mode="native")  # builds names only; no lab is started
    s.ping_nodes = {"cross-node": {"node-1", "node-2"}, "same-node": set()}
    s.rep.timeline = [{"t": float(i), "kill": what, "node": node, "pingSeqBefore": {"cross-node": a, "same-node": a},
                       "pingSeq": {"cross-node": b, "same-node": b}} for i, (what, node, a, b) in enumerate(kills)]
    return s


def test_loss_after_a_bfdd_crash_on_a_passed_node_is_measured_not_a_violation(tmp_path) -> None:
    s = _soak(tmp_path, [("bfdd", "node-2", 100, 102)])
    assert s.bfdd_crash_losses("cross-node", list(range(110, 150))) == []
    assert s.rep.violations == []
    assert s.rep.bfdd_windows[0]["lost"] == 40 and s.rep.bfdd_windows[0]["seconds"] == round(40 * PING_INTERVAL, 2)


def test_other_losses_are_left_for_the_violation(tmp_path) -> None:
    # a bfdd crash on a node the ping does not pass, another kind of kill, and the same-node ping
    s = _soak(tmp_path, [("bfdd", "node-3", 100, 102), ("agent", "node-1", 200, 202), ("bfdd", "node-1", 300, 301)])
    assert s.bfdd_crash_losses("cross-node", [105, 205]) == [105, 205]
    assert s.bfdd_crash_losses("same-node", [305]) == [305]
    assert s.rep.violations == []


def test_a_loss_that_lasts_to_the_end_of_the_bound_is_a_violation(tmp_path) -> None:
    s = _soak(tmp_path, [("bfdd", "node-1", 100, 100)])
    end = 100 + int(BFDD_LOSS_BOUND_SECONDS / PING_INTERVAL)
    left = s.bfdd_crash_losses("cross-node", list(range(101, end + 5)))
    assert left == list(range(end + 1, end + 5))
    assert len(s.rep.violations) == 1 and "end of its" in s.rep.violations[0]
