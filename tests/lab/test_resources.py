"""apply/delete input: multi-document Kubernetes YAML, errors with document number and field path."""

from __future__ import annotations

import pytest
from novanet_lab.errors import LabError
from novanet_lab.resources import parse_resources

DOCS = """
apiVersion: v1
kind: Namespace
metadata: {name: q, labels: {ns: q}}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: q, labels: {pod: a}}
spec:
  nodeName: node-1
  containers:
  - name: c
    ports: [{containerPort: 80, protocol: TCP, name: serve-80-tcp}, {containerPort: 80, protocol: UDP}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: q}
spec: {podSelector: {}, policyTypes: [Ingress]}
"""


def test_parses_kinds() -> None:
    ns, pod, pol = parse_resources(DOCS)
    assert (ns.kind, ns.name, ns.labels) == ("Namespace", "q", {"ns": "q"})
    assert (pod.kind, pod.key, pod.node, pod.labels) == ("Pod", "q/a", "node-1", {"pod": "a"})
    assert pod.ports == [{"port": 80, "protocol": "TCP", "name": "serve-80-tcp"},
                         {"port": 80, "protocol": "UDP", "name": None}]
    assert (pol.kind, pol.key) == ("NetworkPolicy", "q/deny")
    assert pol.raw["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}


def test_list_kind_and_default_namespace() -> None:
    (pod,) = parse_resources("kind: List\nitems:\n- {kind: Pod, metadata: {name: b}}\n")
    assert pod.key == "default/b" and pod.node is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("kind: Pod\nmetadata: {name: a}\nspec: {containers: [{ports: [{containerPort: 0}]}]}",
         "(document 1): Pod a: spec.containers[0].ports[0].containerPort"),
        ("---\nkind: Namespace\nmetadata: {name: ok}\n---\nkind: Deployment\nmetadata: {name: a}\n",
         "(document 2): kind: 'Deployment' is not one of"),
        ("kind: Node\nmetadata: {name: n}\n", "Node objects come from the lab spec"),
        ("kind: Pod\nmetadata: {labels: {}}\n", "metadata.name: is required"),
        ("kind: Pod\nmetadata: {name: A_b}\n", "metadata.name: 'A_b' is not a DNS label"),
        ("kind: Pod\nmetadata: {name: a}\n---\nkind: Pod\nmetadata: {name: a}\n", "Pod default/a appears twice"),
        ("kind: Pod\nmetadata: {name: a}\nspec: {containers: [{ports: [{containerPort: 80}, {containerPort: 80}]}]}",
         "ports[1]: 80/TCP is declared twice"),
        ("kind: [\n", "not valid YAML"),
    ],
)
def test_errors(text: str, expected: str) -> None:
    with pytest.raises(LabError) as e:
        parse_resources(text, "f.yaml")
    assert expected in str(e.value), str(e.value)
