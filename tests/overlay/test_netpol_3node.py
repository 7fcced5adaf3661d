"""The upstream netpol e2e cases with the pods spread over three nodes, per tunnel protocol and in
native routing mode, through the conformance runner of tests/conformance (same replay, same truth
tables); the lab is examples/lab-netpol-3node.yaml (vxlan), examples/lab-netpol-3node-geneve.yaml
(geneve) or examples/lab-native.yaml (FRR BGP, no encapsulation).

Every cross-node cell is decided by the receiving node's to-pod program on the identity the
tunnel delivered (geneve: the sender's option; vxlan: the endpoints map). A representative subset
runs by default to keep tests/overlay within its time budget; the other cases are marked long
(make test-long), and NOVANET_OVERLAY_NETPOL=all runs all 48 here too (98 tests, 5 min 19 s for
both protocols here). :func:`spread_lab` brings the model up
for other routing backends too: contrib/novanet-hostgw/tests/test_hostgw_lab.py runs the same
subset (this module's tests, with its own ``lab3``) over the host-gw plugin, from a venv holding
its wheel.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import netpol_cases as nc
from tests.conformance import test_netpol_conformance as conf
from tests.support.lab import BIN, LabUnderTest

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.lab, pytest.mark.bpf, pytest.mark.slow]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SPECS = {"vxlan": EXAMPLES / "lab-netpol-3node.yaml", "geneve": EXAMPLES / "lab-netpol-3node-geneve.yaml",
         "native": EXAMPLES / "lab-native.yaml"}
# pod-or-namespace selectors (ingress), an updated pod (its identity changes on every node), egress
# deny by pod selector
SUBSET = {9, 22, 25}
ALL = os.environ.get("NOVANET_OVERLAY_NETPOL") == "all"
# The other cases are the long form (make test-long), or run with NOVANET_OVERLAY_NETPOL=all.
CASES = [pytest.param(c, id=f"{c.id:02d}-{c.protocols[0].lower()}",
                      marks=[] if ALL or c.id in SUBSET else [pytest.mark.long]) for c in conf.CASES]


def _spec(protocol: str) -> dict[str, Any]:
    spec = yaml.safe_load(SPECS[protocol].read_text())
    spec.pop("name", None)
    return spec


@contextmanager
def spread_lab(spec: dict[str, Any], tmp: Path, bin_dir: Path = BIN) -> Iterator[LabUnderTest]:
    """The model's lab up (from the venv ``bin_dir``), with the runner's pod documents placed on
    each pod's node; taken down however the body ends."""
    placement = {f"{p['namespace']}/{p['name']}": p["node"] for p in spec["pods"]}
    lab = LabUnderTest(spec, tmp, bin_dir)
    # The runner's pod documents name node-1 (its one-node model); spec.nodeName is immutable, so
    # label changes must name each pod's own node here.
    single_node_doc = conf.pod_doc

    def placed_pod_doc(key: str, labels: dict[str, str]) -> dict[str, Any]:
        doc = single_node_doc(key, labels)
        doc["spec"]["nodeName"] = placement[key]
        return doc

    conf.pod_doc = placed_pod_doc
    try:
        lab.up()
        yield lab
    finally:
        conf.pod_doc = single_node_doc
        lab.down()


# native routing's cells are the long form: make test keeps the tunnels' (the identity delivered
# by geneve's option and by vxlan's endpoints map); native routing's own lab tests are tests/native
@pytest.fixture(scope="module", params=[pytest.param(p, marks=pytest.mark.long) if p == "native" else p
                                        for p in sorted(SPECS)])
def lab3(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabUnderTest]:
    with spread_lab(_spec(request.param), tmp_path_factory.mktemp(f"netpol3-{request.param}")) as lab:
        yield lab


@pytest.fixture(scope="module")
def replayer3(lab3: LabUnderTest, tmp_path_factory: pytest.TempPathFactory) -> conf.Replayer:
    return conf.Replayer(lab3, tmp_path_factory.mktemp("steps3"))


@pytest.fixture(scope="module")
def pod_ips3(lab3: LabUnderTest) -> dict[str, str]:
    return {f"{p['namespace']}/{p['name']}": p["ip"] for p in lab3.status()["pods"]}


def test_model_is_spread_over_three_nodes(lab3: LabUnderTest) -> None:
    nodes = {f"{p['namespace']}/{p['name']}": p["node"] for p in lab3.status()["pods"]}
    assert len({nodes["x/a"], nodes["y/b"], nodes["z/c"]}) == 3
    assert all(len({nodes[f"{ns}/{p}"] for p in "abc"}) == 3 for ns in "xyz")


@pytest.mark.parametrize("case", CASES)
def test_upstream_case_across_nodes(case: nc.NetpolCase, lab3: LabUnderTest, replayer3: conf.Replayer,
                                    pod_ips3: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    conf.test_upstream_case(case, lab3, replayer3, pod_ips3, capsys)
