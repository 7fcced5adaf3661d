"""Every upstream netpol e2e case but SCTP's, over IPv6 and IPv4 with dual-stack pods on one node
through the ebpf datapath, with real packets (tests/bpf/netpol_model.py says how). Long form: make
test runs two of them on tests/bpf/test_ipv6.py's topology."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests import netpol_cases as nc
from tests.bpf.conftest import started_datapath
from tests.bpf.netpol_model import CASES, SHORT, Model, VpTopology, run_case

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.bpf, pytest.mark.long]


@pytest.fixture(scope="module")
def model() -> Iterator[Model]:
    from novanet_core.bpf import bpffs

    bpffs.ensure_mounted()
    topo = VpTopology()
    try:
        topo.create(n_pods=len(nc.PODS))
        with started_datapath(topo) as dp:
            m = Model(topo, dp)
            try:
                yield m
            finally:
                m.close()
    finally:
        topo.destroy()


@pytest.mark.parametrize("case", [c for c in CASES if c.id not in SHORT], ids=lambda c: f"{c.id:02d}")
def test_upstream_case_over_both_families(model: Model, case: nc.NetpolCase) -> None:
    run_case(model, case)
