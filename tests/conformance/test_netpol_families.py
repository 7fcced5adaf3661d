"""The 48 upstream netpol e2e cases per IP family, with the model's pods spread over three nodes
(examples/lab-netpol-3node.yaml's Latin square), through the conformance runner of
test_netpol_conformance.py: a dual-stack lab probed over IPv6 and over IPv4, an IPv6-only lab
probed over IPv6.

A case runs once per family, as upstream runs it in an IPv6 and in an IPv4 cluster: replayed from
the model's state, its IP-dependent CIDRs filled with that family's pod addresses (an IPv6 pod's
hostcidr is its /128, its largecidr the /4 holding it), and every probe sent to that family's
addresses (``lab probe --family``). SCTP cases send crafted INIT chunks over raw sockets of the
family (novanet_lab.sctp).

The labs: dual-stack pods over VXLAN or Geneve with the IPv4 underlay (the eBPF datapath and the tunnel's BPF
programs, IPv6 inner packets) and in native routing on a dual-stack underlay (FRR advertising the
IPv6 PodCIDRs over the IPv4 session), and IPv6 pods on an IPv6-only underlay, over VXLAN (outer IPv6),
over Geneve (outer IPv6, encapsulated in BPF) and in native routing (FRR peering over IPv6). All long form (make test-long): about 18 minutes
per family and lab on a loaded 2-core machine.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from novanet_core import ipfamily
from tests import netpol_cases as nc
from tests.conformance import test_netpol_conformance as conf
from tests.overlay.test_netpol_3node import spread_lab
from tests.support.lab import LabUnderTest

pytestmark = [
    pytest.mark.root,
    pytest.mark.netns,
    pytest.mark.lab,
    pytest.mark.bpf,
    pytest.mark.slow,
    pytest.mark.long,
]

MODEL = Path(__file__).resolve().parents[2] / "examples" / "lab-netpol-3node.yaml"
# cell -> (cluster settings over the model's, underlay family, families probed: IPv6 first)
LABS: dict[str, tuple[dict[str, Any], str, list[str]]] = {
    "dual-stack-vxlan": ({"clusterCIDR": "10.42.0.0/16,fd00:42::/48"}, "dual", ["6", "4"]),
    "dual-stack-geneve": (
        {"clusterCIDR": "10.42.0.0/16,fd00:42::/48", "tunnelProtocol": "geneve"},
        "dual",
        ["6", "4"],
    ),
    "dual-stack-native": (
        {
            "clusterCIDR": "10.42.0.0/16,fd00:42::/48",
            "routingMode": "native",
            "routing": {"type": "frr-bgp"},
            "tunnelProtocol": None,
        },
        "dual",
        ["6", "4"],
    ),
    "ipv6-only-vxlan": ({"clusterCIDR": "fd00:42::/48"}, "IPv6", ["6"]),
    "ipv6-only-geneve": ({"clusterCIDR": "fd00:42::/48", "tunnelProtocol": "geneve"}, "IPv6", ["6"]),
    "ipv6-only-native": (
        {
            "clusterCIDR": "fd00:42::/48",
            "routingMode": "native",
            "routing": {"type": "frr-bgp"},
            "tunnelProtocol": None,
        },
        "IPv6",
        ["6"],
    ),
}


def family_spec(cell: str) -> dict[str, Any]:
    cluster, underlay, _ = LABS[cell]
    spec = yaml.safe_load(MODEL.read_text())
    spec.pop("name", None)
    spec["cluster"] = {k: v for k, v in {**spec["cluster"], **cluster}.items() if v is not None}
    spec["underlay"] = {"family": underlay}
    return spec


@pytest.fixture(scope="module", params=sorted(LABS))
def cell(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def flab(cell: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabUnderTest]:
    with spread_lab(family_spec(cell), tmp_path_factory.mktemp(f"netpolfam-{cell}")) as lab:
        yield lab


@pytest.fixture(scope="module")
def freplayer(flab: LabUnderTest, tmp_path_factory: pytest.TempPathFactory) -> conf.Replayer:
    return conf.Replayer(flab, tmp_path_factory.mktemp("stepsfam"))


@pytest.fixture(scope="module")
def ips_by_family(cell: str, flab: LabUnderTest) -> dict[str, dict[str, str]]:
    """ "6" / "4" -> pod -> that family's address, in the order the cell probes them."""
    pods = flab.status()["pods"]
    out: dict[str, dict[str, str]] = {}
    for fam in LABS[cell][2]:
        out[fam] = {f"{p['namespace']}/{p['name']}": ipfamily.pick(p["ips"], int(fam)) or "" for p in pods}
        assert all(out[fam].values()), f"a pod without an IPv{fam} address: {out[fam]}"
    return out


def test_every_pod_has_an_address_per_family_of_its_lab(
    flab: LabUnderTest, ips_by_family: dict[str, dict[str, str]]
) -> None:
    pods = {f"{p['namespace']}/{p['name']}": p for p in flab.status()["pods"]}
    assert set(pods) == set(nc.PODS)
    assert all(len(p["ips"]) == len(ips_by_family) for p in pods.values())
    assert len({p["node"] for p in pods.values()}) == 3


@pytest.mark.parametrize("case", conf.CASES, ids=[f"{c.id:02d}-{c.protocols[0].lower()}" for c in conf.CASES])
def test_upstream_case_per_family(
    case: nc.NetpolCase,
    flab: LabUnderTest,
    freplayer: conf.Replayer,
    ips_by_family: dict[str, dict[str, str]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    failures = []
    for fam, ips in ips_by_family.items():
        try:
            conf.replay_case(case, flab, freplayer, ips, capsys, family=fam)
        except AssertionError as e:  # the other family is still probed: both results are reported
            failures.append(str(e))
    assert not failures, "\n".join(failures)
