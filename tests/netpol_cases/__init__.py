"""The 48 upstream Kubernetes netpol e2e cases as data, plus their loader.

Independent of NovaNet's compiler: the unit tests feed them to ``novanet_core.policy`` and the
lab replays them with real packets. Each ``cases/NN-<proto>-<slug>.yaml`` holds one case::

    id: 14
    name: should enforce policy based on Ports        # upstream f.It text
    context: Netpol NetworkPolicy between server and client
    source: kubernetes/kubernetes test/e2e/network/netpol/network_policy.go@9db638c0
    model: {protocols: [TCP], ports: [81]}            # servers upstream starts for this case
    steps:                                            # run in order; state carries over
    - do:                                             # actions, in order
      - create_policy: <NetworkPolicy as a Kubernetes YAML dict>
      - update_policy: <NetworkPolicy>                # replaces the one with the same name
      - delete_all_policies: true
      - add_namespace_labels: {namespace: y, labels: {ns2: updated}}
      - add_pod_labels: {pod: x/b, labels: {pod2: updated}}     # merged into the pod's labels
      probes:                                         # then probe every pod pair
      - protocol: TCP
        port: 81
        truth: |                                      # upstream's truth-table format:
          -   x/a x/b ...                             # rows = from, columns = to,
          x/a X   .   ...                             # '.' allowed, 'X' blocked

The model (upstream ``model.go``): namespaces x, y, z labelled ``ns=<name>`` (plus
``kubernetes.io/metadata.name``); pods a, b, c in each, labelled ``pod=<name>``; each pod serves
every (port, protocol) of ``model`` on a container port named ``serve-<port>-<proto>`` (lower case).
IP-dependent CIDRs are placeholders: ``$(hostcidr:x/b)`` = x/b's IP as /32 (/128), and
``$(largecidr:x/b)`` = the /4 containing it (upstream ``makeLargeCIDRForIP``); pass ``pod_ips`` to
:func:`load_cases` to fill them in. Upstream ignores loopback cells (``ignoreLoopback``, k8s#95879:
a pod reaching its own IP never leaves its netns); :data:`IGNORE_LOOPBACK` says the same here.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CASES_DIR = Path(__file__).parent / "cases"
NAMESPACES = ("x", "y", "z")
POD_NAMES = ("a", "b", "c")
PODS = tuple(f"{n}/{p}" for n in NAMESPACES for p in POD_NAMES)
IGNORE_LOOPBACK = True
ACTIONS = ("create_policy", "update_policy", "delete_all_policies", "add_namespace_labels", "add_pod_labels")
_PLACEHOLDER = re.compile(r"\$\((hostcidr|largecidr):([xyz]/[abc])\)")


def namespace_labels(ns: str) -> dict[str, str]:
    """Labels the e2e model sets (the apiserver adds ``kubernetes.io/metadata.name`` itself)."""
    return {"ns": ns}


def pod_labels(pod: str) -> dict[str, str]:
    return {"pod": pod}


def container_ports(protocols: list[str], ports: list[int]) -> list[dict[str, Any]]:
    """``containerPorts`` of every model pod: one named port per (port, protocol)."""
    return [{"name": f"serve-{p}-{proto.lower()}", "containerPort": p, "protocol": proto}
            for proto in protocols for p in ports]


@dataclass(frozen=True)
class Probe:
    protocol: str
    port: int
    table: str
    expected: Mapping[tuple[str, str], bool]  # (from, to) -> allowed


@dataclass(frozen=True)
class Step:
    actions: list[dict[str, Any]]
    probes: list[Probe]


@dataclass(frozen=True)
class NetpolCase:
    id: int
    name: str
    context: str
    protocols: list[str]
    ports: list[int]
    steps: list[Step]
    path: Path
    note: str = ""
    pods: tuple[str, ...] = field(default=PODS)


def parse_truth_table(text: str) -> dict[tuple[str, str], bool]:
    rows = [ln.split() for ln in text.strip().splitlines() if ln.strip()]
    header = rows[0][1:]
    out = {}
    for row in rows[1:]:
        frm, cells = row[0], row[1:]
        if len(cells) != len(header):
            raise ValueError(f"truth table row {frm}: {len(cells)} cells for {len(header)} columns")
        for to, c in zip(header, cells, strict=True):
            if c not in (".", "X"):
                raise ValueError(f"truth table cell {frm}->{to}: {c!r} is not '.' or 'X'")
            out[(frm, to)] = c == "."
    return out


def render_truth_table(cells: Mapping[tuple[str, str], bool], pods: tuple[str, ...] = PODS) -> str:
    lines = [" ".join(["-  ", *pods])]
    for f in pods:
        lines.append(" ".join([f, *(f"{'.' if cells[(f, t)] else 'X':<3}" for t in pods)]).rstrip())
    return "\n".join(lines) + "\n"


def _cidr(kind: str, ip: str) -> str:
    addr = ipaddress.ip_address(ip)
    if kind == "hostcidr":
        return f"{addr}/{addr.max_prefixlen}"
    return str(ipaddress.ip_network(f"{addr}/4", strict=False))


def fill_placeholders(obj: Any, pod_ips: Mapping[str, str]) -> Any:
    if isinstance(obj, str):
        return _PLACEHOLDER.sub(lambda m: _cidr(m.group(1), pod_ips[m.group(2)]), obj)
    if isinstance(obj, list):
        return [fill_placeholders(v, pod_ips) for v in obj]
    if isinstance(obj, dict):
        return {k: fill_placeholders(v, pod_ips) for k, v in obj.items()}
    return obj


def load_case(path: Path, pod_ips: Mapping[str, str] | None = None) -> NetpolCase:
    doc = yaml.safe_load(path.read_text())
    if pod_ips is not None:
        doc = fill_placeholders(doc, pod_ips)
    steps = []
    for s in doc["steps"]:
        for a in s["do"]:
            (kind,) = a.keys()
            if kind not in ACTIONS:
                raise ValueError(f"{path.name}: unknown action {kind!r}")
        probes = [Probe(p["protocol"], int(p["port"]), p["truth"], parse_truth_table(p["truth"]))
                  for p in s["probes"]]
        steps.append(Step(list(s["do"]), probes))
    return NetpolCase(
        id=int(doc["id"]), name=doc["name"], context=doc["context"], protocols=list(doc["model"]["protocols"]),
        ports=[int(p) for p in doc["model"]["ports"]], steps=steps, path=path, note=doc.get("note", ""),
    )


def load_cases(pod_ips: Mapping[str, str] | None = None) -> list[NetpolCase]:
    """All 48 cases in upstream order; ``pod_ips`` ("x/a" -> IP) fills the CIDR placeholders."""
    return [load_case(p, pod_ips) for p in sorted(CASES_DIR.glob("*.yaml"))]
