"""The guide's DNS scenario with a real DNS server: dnsmasq as kube-system/coredns behind the
Service kube-system/kube-dns (10.96.0.10); names resolved from a pod through the ClusterIP over
UDP and TCP; under ``policy.defaultDeny: true`` resolution fails and ``novanetctl drops`` says
why; after ``lab apply`` of the guide's ``allow-dns`` policy it works."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conformance.test_policy_lab import ALLOW_DNS  # the guide's policy, verbatim
from tests.services.helpers import apply, lab_exec, service, spec
from tests.support.lab import LabUnderTest

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.lab, pytest.mark.bpf, pytest.mark.slow]


MODES = {"kube-proxy-replacement": {"kubeProxyReplacement": True},
         "kube-proxy-iptables": {"kubeProxyReplacement": False, "kubeProxy": "iptables"}}


def dns_spec(mode: str) -> dict:
    s = spec(policy={"defaultDeny": True}, **MODES[mode])
    s["pods"].append({"name": "coredns", "namespace": "kube-system", "server": "dns", "labels": {"k8s-app": "kube-dns"},
                      "ports": [{"name": "dns", "port": 53, "protocol": "UDP"},
                                {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]})
    s["services"].append({"name": "kube-dns", "namespace": "kube-system", "clusterIP": "10.96.0.10",
                          "selector": {"k8s-app": "kube-dns"},
                          "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": "dns"},
                                    {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": "dns-tcp"}]})
    return s


@pytest.fixture(scope="module", params=list(MODES))
def lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabUnderTest]:
    lab = LabUnderTest(dns_spec(request.param), tmp_path_factory.mktemp(f"dns-{request.param}"))
    try:
        lab.up()
        yield lab
    finally:
        lab.down()


def dig(lab: LabUnderTest, pod: str, name: str, *opts: str) -> subprocess.CompletedProcess[str]:
    # +search: through the pod's resolv.conf search path and nameserver, as an application would.
    return lab_exec(lab, pod, "dig", "+short", "+time=1", "+tries=2", *opts, name)


def test_the_dns_server_pod_answers_the_labs_service_names(lab: LabUnderTest) -> None:
    # Straight to the server's own address from inside its pod: the DNS server itself, with no
    # Service translation and no policy in the way (a pod's traffic to itself never leaves it).
    dns_ip = lab.pod_ip("kube-system/coredns")
    web = service(lab, "default/web")["clusterIP"]
    for proto in ("+notcp", "+tcp"):
        r = lab_exec(lab, "kube-system/coredns", "dig", "+short", "+time=1", "+tries=2", proto, f"@{dns_ip}",
                     "web.default.svc.cluster.local")
        assert r.stdout.split() == [web], r.stdout + r.stderr
    r = lab_exec(lab, "kube-system/coredns", "dig", "+time=1", "+tries=2", f"@{dns_ip}", "nope.default.svc.cluster.local")
    assert "status: NXDOMAIN" in r.stdout
    resolv = lab_exec(lab, "default/client", "cat", "/etc/resolv.conf").stdout
    assert resolv.splitlines() == ["search default.svc.cluster.local svc.cluster.local cluster.local",
                                   "nameserver 10.96.0.10", "options ndots:5"]


def test_default_deny_blocks_dns_until_the_guides_allow_dns_policy(lab: LabUnderTest, tmp_path: Path) -> None:
    web = service(lab, "default/web")["clusterIP"]
    denied = dig(lab, "default/client", "web", "+search")
    assert web not in denied.stdout.split()
    drops = lab.ctl("drops")
    client = lab.pod_ip("default/client")
    why = [e for e in drops["events"] if e.get("src_ip") == client and e.get("dst_port") == 53]
    assert why and all(e["drop_reason_name"] == "POLICY_DENIED" for e in why), drops["events"][-5:]
    assert drops["drops"]["POLICY_DENIED"] > 0
    apply(lab, tmp_path, ALLOW_DNS)
    for opts in (("+notcp",), ("+tcp",)):
        r = dig(lab, "default/client", "web", "+search", *opts)
        assert r.stdout.split() == [web], r.stdout + r.stderr
    r = dig(lab, "default/client", "kube-dns.kube-system.svc.cluster.local.", "+tcp")
    assert r.stdout.split() == ["10.96.0.10"]

