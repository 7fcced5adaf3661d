"""NetworkPolicy in a default-deny lab: the guide's DNS example with a kube-system DNS pod on
UDP/TCP 53, invalid policies rejected with a clear message while the valid ones stay enforced,
``novanetctl policy`` / ``drops`` naming policies, and the programming latency being recorded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.lab import LabUnderTest

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.lab, pytest.mark.bpf, pytest.mark.slow]

WEB = [{"name": "http", "port": 80, "protocol": "TCP"}]
DNS = [{"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]
SPEC = {
    "cluster": {"clusterCIDR": "10.42.0.0/16", "routingMode": "overlay", "tunnelProtocol": "vxlan",
                "datapath": "ebpf", "policy": {"defaultDeny": True}},
    "nodes": [{"name": "node-1"}],
    "namespaces": [{"name": "kube-system", "labels": {}}, {"name": "x", "labels": {"ns": "x"}}],
    "pods": [
        {"name": "coredns", "namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}, "ports": DNS},
        {"name": "client", "namespace": "default", "labels": {"app": "client"}, "ports": WEB},
        {"name": "web", "namespace": "default", "labels": {"app": "web"}, "ports": WEB},
        {"name": "a", "namespace": "x", "labels": {"pod": "a"}, "ports": WEB},
    ],
}

# The guide's remedy, verbatim: "If using policy.defaultDeny: true, create a cluster-wide policy allowing DNS"
ALLOW_DNS = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-dns
  namespace: default
spec:
  podSelector: {}
  policyTypes:
  - Egress
  egress:
  - to:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: kube-system
    ports:
    - protocol: UDP
      port: 53
    - protocol: TCP
      port: 53
"""
ALLOW_WEB = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-from-client, namespace: default}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{from: [{podSelector: {matchLabels: {app: client}}}], ports: [{port: 80}]}]
"""
CLIENT_TO_WEB = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: client-to-web, namespace: default}
spec:
  podSelector: {matchLabels: {app: client}}
  policyTypes: [Egress]
  egress: [{to: [{podSelector: {matchLabels: {app: web}}}], ports: [{port: 80}]}]
"""
INVALID = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: broken, namespace: x}
spec:
  podSelector: {}
  ingress: [{from: [{ipBlock: {cidr: 192.168.0.0/16, except: [10.0.0.0/8]}}]}]
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory):
    lab = LabUnderTest(SPEC, tmp_path_factory.mktemp("policylab"))
    try:
        lab.up()
        yield lab
    finally:
        lab.down()


def apply(lab: LabUnderTest, tmp: Path, text: str) -> None:
    f = tmp / "p.yaml"
    f.write_text(text)
    lab.cli("lab", "apply", "-f", str(f))


def cells(lab: LabUnderTest, src: str, dst: str, port: int, proto: str) -> bool:
    (r,) = lab.probe("--from", src, "--to", dst, "--port", str(port), "--protocol", proto)
    return bool(r["allowed"])


def test_default_deny_then_the_guides_dns_policy(lab: LabUnderTest, tmp_path: Path) -> None:
    assert not cells(lab, "default/client", "kube-system/coredns", 53, "UDP")
    assert not cells(lab, "default/client", "kube-system/coredns", 53, "TCP")
    assert not cells(lab, "default/client", "default/web", 80, "TCP")
    apply(lab, tmp_path, ALLOW_DNS)
    assert cells(lab, "default/client", "kube-system/coredns", 53, "UDP")
    assert cells(lab, "default/client", "kube-system/coredns", 53, "TCP")
    assert cells(lab, "default/web", "kube-system/coredns", 53, "UDP")
    assert not cells(lab, "x/a", "kube-system/coredns", 53, "UDP")  # "apply this in every namespace"
    assert not cells(lab, "default/client", "default/web", 80, "TCP")  # still default deny
    assert not cells(lab, "kube-system/coredns", "default/client", 80, "TCP")
    apply(lab, tmp_path, ALLOW_WEB)
    # web's ingress now admits client, but allow-dns selects client for egress (DNS only): denied
    assert not cells(lab, "default/client", "default/web", 80, "TCP")
    apply(lab, tmp_path, CLIENT_TO_WEB)
    assert cells(lab, "default/client", "default/web", 80, "TCP")
    assert not cells(lab, "x/a", "default/web", 80, "TCP")
    rows = lab.ctl("policy")["rules"]
    dns = [r for r in rows if r["policy"] == "default/allow-dns" and r["endpoint"] == "default/client"]
    assert {(r["direction"], r["protocol"], r["ports"], r["action"]) for r in dns} == {("egress", "TCP,UDP", "TCP/53,UDP/53",
                                                                                        "ALLOW")}
    assert dns[0]["peer"]["kind"] == "identity" and dns[0]["peer"]["labels"] == {"k8s-app": "kube-dns"}
    drops = _agent(lab, "policy.drops", {"limit": 1000})
    denied = [d for d in drops if d["drop_reason_name"] == "POLICY_DENIED" and d["src_pod"] == "x/a"
              and d["dst_pod"] == "default/web"]
    assert denied and "egress of x/a isolated by defaultDeny: no policy allowed it" == denied[-1]["policy_reason"]


def test_invalid_policies_are_rejected_and_the_valid_ones_stay_enforced(lab: LabUnderTest, tmp_path: Path) -> None:
    apply(lab, tmp_path, ALLOW_DNS)
    apply(lab, tmp_path, INVALID)
    # an invalid UPDATE of a valid policy: the last valid version stays in force
    apply(lab, tmp_path, ALLOW_DNS.replace("port: 53\n    - protocol: TCP", "port: 99999\n    - protocol: TCP"))
    listing = lab.ctl("policy")
    assert "x/broken" in listing["rejected"] and "default/allow-dns" in listing["rejected"]
    msg = " ".join(listing["rejected"]["x/broken"])
    assert "spec.ingress[0].from[0].ipBlock.except[0]" in msg and "not inside cidr" in msg
    assert "spec.egress[0].ports[0].port" in " ".join(listing["rejected"]["default/allow-dns"])
    log = Path(lab.status()["nodes"][0]["logs"]["agent"]).read_text()
    assert "x/broken" in log and "except[0]" in log
    assert cells(lab, "default/client", "kube-system/coredns", 53, "UDP")  # still enforced as before
    assert cells(lab, "default/client", "kube-system/coredns", 53, "TCP")
    assert not cells(lab, "default/client", "default/web", 81, "TCP")
    apply(lab, tmp_path, ALLOW_DNS)  # fixed again
    assert "default/allow-dns" not in lab.ctl("policy")["rejected"]


def test_programming_latency_is_recorded(lab: LabUnderTest, tmp_path: Path) -> None:
    apply(lab, tmp_path, ALLOW_WEB.replace("web-from-client", "latency-probe"))
    st = _agent(lab, "policy.status", {})
    assert st["supported"] and st["programming"]["count"] > 0 and st["programming"]["p99"] is not None
    assert st["defaultDeny"] is True and st["endpoints"] == 4


def _agent(lab: LabUnderTest, method: str, params: dict[str, Any]) -> Any:
    from novanet_core.api.client import ApiClient

    with ApiClient(str(lab.paths.socket("node-1", "agent")), timeout=30) as c:
        return json.loads(json.dumps(c.call(method, params)))


