"""The chaos soak in its short form (bench/soak.py runs it for as long as asked): a 3-node lab
under concurrent pod churn, label and policy changes, probes against the reference evaluator and
daemon SIGKILLs, then every invariant checked (tests/support/chaos.py has the details)."""

from __future__ import annotations

import os

import pytest

from tests.support.chaos import Soak

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.lab, pytest.mark.bpf, pytest.mark.slow]


def test_short_chaos_soak(tmp_path) -> None:
    # 35 s with a kill every 12 s on average: every kind of change and two or three daemon kills;
    # the long soak (bench.soak, make test-long) is the one that runs for half an hour.
    seconds = float(os.environ.get("NOVANET_SOAK_SECONDS") or 35)
    soak = Soak(tmp_path, seed=int(os.environ.get("NOVANET_SOAK_SEED") or 1), kill_every=12.0)
    try:
        soak.up()
        rep = soak.run(seconds)
    finally:
        soak.down()
    print(rep.summary())
    assert (
        rep.ops["pod_add"] > 0 and rep.ops["pod_del"] > 0 and rep.probes > 0 and sum(rep.kills.values()) > 0
    )
    assert rep.violations == [], rep.summary()
