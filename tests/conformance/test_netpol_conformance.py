"""The 48 upstream Kubernetes netpol e2e cases with real packets, in one lab.

Each case (tests/netpol_cases) is replayed through the real CLI: its policies, namespace and pod
label changes go in with ``novanet lab apply`` / ``novanet lab delete``, and every probe of the
case is a ``novanet lab probe`` over all 9x9 pod pairs, compared cell by cell with upstream's
truth table. The probe table of every case is printed to the test log.

The diagonal (a pod reaching its own IP) is skipped, as upstream does (``ignoreLoopback``,
k8s#95879): that traffic never leaves the pod's netns, so no CNI can enforce policy on it.
SCTP cases send crafted SCTP INIT chunks through raw sockets and watch for their arrival in the
target pod (this kernel has no SCTP sockets); see novanet_lab.sctp.

One lab serves all cases: between cases every policy is deleted and the model's labels restored.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from tests import netpol_cases as nc
from tests.support.lab import LabUnderTest

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.lab, pytest.mark.bpf, pytest.mark.slow]

PROBE_TIMEOUT = "0.5"
MODEL_PORTS = nc.container_ports(["TCP", "UDP", "SCTP"], [80, 81])
SPEC = {
    "cluster": {"clusterCIDR": "10.42.0.0/16", "routingMode": "overlay", "tunnelProtocol": "vxlan",
                "datapath": "ebpf", "policy": {"defaultDeny": False}},
    "nodes": [{"name": "node-1"}],
    "namespaces": [{"name": ns, "labels": nc.namespace_labels(ns)} for ns in nc.NAMESPACES],
    "pods": [{"name": p, "namespace": ns, "node": "node-1", "labels": nc.pod_labels(p),
              "ports": [{"name": c["name"], "port": c["containerPort"], "protocol": c["protocol"]}
                        for c in MODEL_PORTS]}
             for ns in nc.NAMESPACES for p in nc.POD_NAMES],
}
CASES = nc.load_cases()


def namespace_doc(ns: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}}


def pod_doc(key: str, labels: dict[str, str]) -> dict[str, Any]:
    ns, name = key.split("/")
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"nodeName": "node-1", "containers": [{"name": "server", "ports": MODEL_PORTS}]}}


class Replayer:
    """Applies a case's actions to the lab and remembers what has to be undone afterwards."""

    def __init__(self, lab: LabUnderTest, tmp: Any):
        self.lab, self.tmp = lab, tmp
        self.policies: dict[str, dict[str, Any]] = {}
        self.ns_labels = {ns: nc.namespace_labels(ns) for ns in nc.NAMESPACES}
        self.pod_labels = {k: nc.pod_labels(k.split("/")[1]) for k in nc.PODS}
        self.n = 0

    def _file(self, docs: list[dict[str, Any]]) -> str:
        self.n += 1
        f = self.tmp / f"step{self.n}.yaml"
        f.write_text(yaml.safe_dump_all(docs, sort_keys=False))
        return str(f)

    def apply(self, docs: list[dict[str, Any]]) -> None:
        if docs:
            self.lab.cli("lab", "apply", "-f", self._file(docs))

    def delete_policies(self) -> None:
        if self.policies:
            self.lab.cli("lab", "delete", "-f", self._file(list(self.policies.values())))
            self.policies.clear()

    def run(self, actions: list[dict[str, Any]]) -> None:
        batch: list[dict[str, Any]] = []
        for action in actions:
            ((kind, arg),) = action.items()
            if kind in ("create_policy", "update_policy"):
                key = f"{arg['metadata']['namespace']}/{arg['metadata']['name']}"
                self.policies[key] = arg
                batch.append(arg)
            elif kind == "delete_all_policies":
                self.apply(batch)
                batch = []
                self.delete_policies()
            elif kind == "add_namespace_labels":
                ns = arg["namespace"]
                self.ns_labels[ns] = {**self.ns_labels[ns], **arg["labels"]}
                batch.append(namespace_doc(ns, self.ns_labels[ns]))
            elif kind == "add_pod_labels":
                pod = arg["pod"]
                self.pod_labels[pod] = {**self.pod_labels[pod], **arg["labels"]}
                batch.append(pod_doc(pod, self.pod_labels[pod]))
            else:
                raise AssertionError(f"unknown action {kind}")
        self.apply(batch)

    def reset(self) -> None:
        """Back to the model: no policies, the model's labels."""
        self.delete_policies()
        docs = []
        for ns, labels in self.ns_labels.items():
            if labels != nc.namespace_labels(ns):
                self.ns_labels[ns] = nc.namespace_labels(ns)
                docs.append(namespace_doc(ns, self.ns_labels[ns]))
        for pod, labels in self.pod_labels.items():
            if labels != nc.pod_labels(pod.split("/")[1]):
                self.pod_labels[pod] = nc.pod_labels(pod.split("/")[1])
                docs.append(pod_doc(pod, self.pod_labels[pod]))
        self.apply(docs)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("conformance")
    lab = LabUnderTest(SPEC, tmp)
    try:
        lab.up()
        yield lab
    finally:
        lab.down()


@pytest.fixture(scope="module")
def replayer(lab: LabUnderTest, tmp_path_factory: pytest.TempPathFactory) -> Replayer:
    return Replayer(lab, tmp_path_factory.mktemp("steps"))


@pytest.fixture(scope="module")
def pod_ips(lab: LabUnderTest) -> dict[str, str]:
    return {f"{p['namespace']}/{p['name']}": p["ip"] for p in lab.status()["pods"]}


def probe_table(lab: LabUnderTest, protocol: str, port: int,
                family: str = "all") -> tuple[dict[tuple[str, str], bool], dict]:
    """One probe of a case; ``family`` (4 or 6) picks the targets' addresses in a dual-stack lab
    (its cells are keyed by pod pair, so a dual-stack lab is probed one family at a time)."""
    r = lab.cli("lab", "probe", "-o", "json", "--port", str(port), "--protocol", protocol,
                "--timeout", PROBE_TIMEOUT, "--family", family)
    results = json.loads(r.stdout)["results"]
    cells = {(x["from"], x["to"]): x["allowed"] for x in results}
    reasons = {(x["from"], x["to"]): x["reason"] for x in results}
    return cells, reasons


def render(cells: dict[tuple[str, str], bool], expected: dict[tuple[str, str], bool] | None = None) -> str:
    """The e2e table; a cell that differs from ``expected`` is marked with '!' after it, the
    diagonal (not compared) with '-'."""
    lines = ["-    " + " ".join(f"{p:<4}" for p in nc.PODS)]
    for f in nc.PODS:
        row = []
        for t in nc.PODS:
            c = "." if cells.get((f, t)) else "X"
            if f == t:
                c += "-"
            elif expected is not None and expected[(f, t)] != cells.get((f, t)):
                c += "!"
            row.append(f"{c:<4}")
        lines.append(f"{f:<4} " + " ".join(row))
    return "\n".join(lines)


@pytest.mark.parametrize("case", CASES, ids=[f"{c.id:02d}-{c.protocols[0].lower()}" for c in CASES])
def test_upstream_case(case: nc.NetpolCase, lab: LabUnderTest, replayer: Replayer, pod_ips: dict[str, str],
                       capsys: pytest.CaptureFixture[str]) -> None:
    replay_case(case, lab, replayer, pod_ips, capsys)


def replay_case(case: nc.NetpolCase, lab: LabUnderTest, replayer: Replayer, pod_ips: dict[str, str],
                capsys: pytest.CaptureFixture[str], family: str = "all") -> None:
    """Replay ``case`` from the model's state and probe it; ``family`` (4 or 6) probes that family's
    addresses, and ``pod_ips`` must then be that family's (they fill the case's CIDRs)."""
    case = nc.load_case(case.path, pod_ips)  # fill the IP-dependent CIDR placeholders
    replayer.reset()
    failures = []
    fam = "" if family == "all" else f" IPv{family}"
    report = [f"=== case {case.id}{fam}: {case.name} [{case.context}]"]
    try:
        for si, step in enumerate(case.steps):
            replayer.run(step.actions)
            for probe in step.probes:
                cells, reasons = probe_table(lab, probe.protocol, probe.port, family)
                wrong = sorted((f, t) for f in nc.PODS for t in nc.PODS
                               if f != t and cells.get((f, t)) != probe.expected[(f, t)])
                note = " (crafted SCTP INIT chunks over raw sockets)" if probe.protocol == "SCTP" else ""
                report.append(f"--- step {si} {probe.protocol}/{probe.port}{note}: "
                              f"{'OK' if not wrong else f'{len(wrong)} cells differ'} (diagonal skipped)")
                report.append(render(cells, probe.expected))
                if wrong:
                    report.append("expected:\n" + probe.table.rstrip())
                    report.append("differing: " + ", ".join(f"{f}->{t} ({reasons.get((f, t))})" for f, t in wrong))
                    failures.append(f"step {si} {probe.protocol}/{probe.port}: {wrong}")
    finally:
        with capsys.disabled():
            print("\n" + "\n".join(report), flush=True)
    assert not failures, f"case {case.id}{fam} ({case.name}): " + "; ".join(failures)
