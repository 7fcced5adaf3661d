"""The guide's "No External Connectivity" scenario, reproduced in a lab and diagnosed with the CLI.

The lab's outside host (203.0.113.1, netns <lab>.outside) sits behind the nodes' default route
and has no route to pod addresses, like a server on the internet: a pod gets an answer only if
its node rewrote the source address. The egress map decides what leaves the cluster; its
per-rule counters show where the packets went.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.lab import LabUnderTest

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.lab, pytest.mark.bpf]

OUTSIDE = "203.0.113.1"
OUTSIDE_2 = "203.0.113.200"  # a second "internet" address on the same host, added by the test

CONNECT = ("import socket,sys\ntry:\n s=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=2)\n"
           " print(s.recv(100).decode().strip())\nexcept OSError as e:\n print('FAIL',e)\n")


def spec(masquerade: bool) -> dict[str, Any]:
    return {
        "cluster": {"clusterCIDR": "10.42.0.0/16", "egress": {"masqueradeEnabled": masquerade}},
        "underlay": {"cidr": "172.30.0.0/24"},
        "nodes": [{"name": "node-1"}],
        "namespaces": [{"name": "x"}],
        "pods": [{"name": "a", "namespace": "x", "labels": {"app": "a"}},
                 {"name": "b", "namespace": "x", "labels": {"app": "b"}}],
    }


def connect(lab: LabUnderTest, pod: str, ip: str, port: int = 80) -> str:
    r = lab.run_in(lab.pod_netns(pod), "python3", "-c", CONNECT, ip, str(port))
    return r.stdout.strip()


def rule(egress: dict[str, Any], src: int, cidr: str) -> dict[str, Any]:
    return next(r for r in egress["rules"] if r["src_identity"] == src and r["dst_cidr"] == cidr)


def wait_for(pred, what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def capture_source(lab: LabUnderTest, pod: str, dst: str) -> str:
    """The source address the outside host sees for a ping from ``pod`` (the guide: "check the
    source IP of outgoing packets")."""
    cap = subprocess.Popen(["nsenter", f"--net={lab.paths.netns_path(lab.paths.outside_netns)}", "tcpdump", "-l",
                            "-n", "-c", "1", "-i", "eth0", "icmp[icmptype] == icmp-echo"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        while "listening on" not in (banner := cap.stderr.readline()):  # tcpdump is ready
            assert banner, f"tcpdump did not start: {cap.stderr.read()}"
        deadline = time.monotonic() + 15
        while cap.poll() is None and time.monotonic() < deadline:
            lab.run_in(lab.pod_netns(pod), "ping", "-c", "1", "-W", "1", dst)
        line = cap.stdout.read().strip() if cap.poll() is not None else ""
    finally:
        if cap.poll() is None:
            cap.kill()
        cap.wait()
    assert "IP " in line, f"no echo request reached the outside host: {line!r}"
    return line.split("IP ", 1)[1].split(" >", 1)[0]


def ping(lab: LabUnderTest, netns: str, ip: str) -> bool:
    return lab.run_in(netns, "ping", "-c", "1", "-W", "2", ip).returncode == 0


def enable_masquerade(lab: LabUnderTest) -> None:
    """The guide's resolution: masqueradeEnabled in the node's config, the agent restarted."""
    cfg = lab.paths.node_config("node-1")
    cfg.write_text(cfg.read_text().replace("masqueradeEnabled: false", "masqueradeEnabled: true"))
    lab.cli("lab", "restart", "--daemon", "agent")
    wait_for(lambda: rule(lab.ctl("egress"), 0, "0.0.0.0/0")["action"] == "SNAT", "SNAT after the restart")


@pytest.fixture(scope="module")
def egress_lab(tmp_path_factory) -> Iterator[tuple[LabUnderTest, dict[str, Any]]]:
    """One lab for the file (bringing one up is most of each test's time): it starts with
    masquerade off, as the first scenario needs; the second turns it on if it still is off."""
    lab = LabUnderTest(spec(masquerade=False), tmp_path_factory.mktemp("egress"))
    try:
        yield lab, lab.up()
    finally:
        lab.down()


def test_masquerade_off_no_reply_and_the_cli_says_why(egress_lab):
    lab, st = egress_lab
    node_ip = st["nodes"][0]["ip"]
    assert st["outside"]["address"] == OUTSIDE
    # Symptom: pods cannot reach external services, but pod-to-pod works.
    assert connect(lab, "x/a", OUTSIDE).startswith("FAIL")
    assert ping(lab, lab.pod_netns("x/a"), lab.pod_ip("x/b"))
    # Diagnosis 1: masquerade is off.
    assert lab.ctl("status")["masquerade"] is False
    # Diagnosis 2: the egress map lets the traffic out (ALLOW, no SNAT) and counts it.
    eg = lab.ctl("egress")
    assert eg["masquerade"] is False
    default = rule(eg, 0, "0.0.0.0/0")
    assert default["action"] == "ALLOW" and default["packets"] > 0 and default["bytes"] > 0
    # Diagnosis 3: the outside host sees the pod's own address, which it cannot answer.
    assert capture_source(lab, "x/a", OUTSIDE) == lab.pod_ip("x/a")
    # Diagnosis 4: the node itself has external connectivity (its default route works).
    assert ping(lab, lab.node_netns(), OUTSIDE)
    assert "default via" in lab.run_in(lab.node_netns(), "ip", "route", "show", "default").stdout
    # Resolution: enable masquerade, and the pod gets its answer from the node's address.
    enable_masquerade(lab)
    assert connect(lab, "x/a", OUTSIDE) == "outside"
    assert capture_source(lab, "x/a", OUTSIDE) == node_ip


POLICY = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: egress-web, namespace: x}
spec:
  podSelector: {matchLabels: {app: a}}
  policyTypes: [Egress]
  egress:
  - to:
    - ipBlock: {cidr: 203.0.113.0/24, except: [203.0.113.0/28]}
"""


def test_egress_policy_allows_and_denies_with_counters(egress_lab, tmp_path):
    lab, st = egress_lab
    if lab.ctl("status")["masquerade"] is False:
        enable_masquerade(lab)
    node_ip = st["nodes"][0]["ip"]
    lab.run_in(lab.paths.netns_path(lab.paths.outside_netns), "ip", "addr", "add", f"{OUTSIDE_2}/32", "dev", "lo",
               check=True)
    # Masquerade on: the answer comes back, the outside host saw the node's address.
    assert connect(lab, "x/a", OUTSIDE) == "outside"
    assert capture_source(lab, "x/a", OUTSIDE) == node_ip
    eg = lab.ctl("egress")
    default = rule(eg, 0, "0.0.0.0/0")
    assert default["action"] == "SNAT" and default["snat_ip"] == node_ip and default["packets"] > 0

    f = tmp_path / "policy.yaml"
    f.write_text(POLICY)
    lab.cli("lab", "apply", "-f", str(f))
    ident = next(e["identity"] for e in lab.ctl("endpoints") if e["pod"] == "a")
    eg = wait_for(lambda: (e := lab.ctl("egress")) and any(r["src_identity"] == ident for r in e["rules"]) and e,
                  "the policy's egress entries")
    allow, carve, iso = (rule(eg, ident, c) for c in ("203.0.113.0/24", "203.0.113.0/28", "0.0.0.0/0"))
    assert (allow["action"], carve["action"], iso["action"]) == ("SNAT", "DENY", "DENY")
    assert allow["namespace"] == "x" and allow["name"] == "egress-web" and carve["origin"] == "egress[0] except"

    assert connect(lab, "x/a", OUTSIDE_2) == "outside"  # inside the cidr, outside the except
    assert connect(lab, "x/a", OUTSIDE).startswith("FAIL")  # in the except
    assert connect(lab, "x/b", OUTSIDE) == "outside"  # not selected: the any-source entry
    eg2 = lab.ctl("egress")
    for before, cidr in ((allow, "203.0.113.0/24"), (carve, "203.0.113.0/28")):
        after = rule(eg2, ident, cidr)
        assert after["packets"] > before["packets"] and after["bytes"] > before["bytes"], cidr
    assert rule(eg2, 0, "0.0.0.0/0")["packets"] > default["packets"]
    # The drop is visible with its reason and the policy behind it.
    drops = lab.ctl("drops", "--to-ip", OUTSIDE)
    assert any(e["drop_reason_name"] == "POLICY_DENIED" and e["src_pod"] == "x/a" for e in drops["events"])
