"""Objects for ``lab apply -f`` / ``lab delete -f``: multi-document Kubernetes-style YAML.

Kinds: Namespace, Pod, NetworkPolicy, Service, EndpointSlice (and ``kind: List`` of them). Each object is validated with
the agent's own parser (novanet_core.state.model.parse_object) so that the lab refuses exactly what
the agents would, with the document number and the field path in the message.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from novanet_core.state.model import ObjectError, parse_object
from novanet_lab.errors import LabError
from novanet_lab.spec import DNS_LABEL_RE

APPLY_KINDS = ("Namespace", "Pod", "NetworkPolicy", "Service", "EndpointSlice")


@dataclass
class Resource:
    kind: str
    name: str
    namespace: str | None
    raw: dict[str, Any]  # as written by the user (NetworkPolicy goes to the manifests as is)
    labels: dict[str, str]
    node: str | None = None  # Pod only
    ports: list[dict[str, Any]] | None = None  # Pod only: [{port, protocol, name}]
    ready: bool = True  # Pod only: false when status.conditions says Ready is not True

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    def describe(self) -> str:
        return f"{self.kind} {self.key}"


def load_resources(path: str) -> list[Resource]:
    if path == "-":
        import sys

        text, source = sys.stdin.read(), "<stdin>"
    else:
        try:
            text, source = Path(path).read_text(), path
        except FileNotFoundError:
            raise LabError(f"{path} does not exist") from None
        except OSError as e:
            raise LabError(f"cannot read {path}: {e.strerror or e}") from None
    return parse_resources(text, source)


def parse_resources(text: str, source: str = "<input>") -> list[Resource]:
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as e:
        raise LabError(f"{source} is not valid YAML: {e}") from None
    except RecursionError:  # PyYAML's composer recurses once per nesting level
        raise LabError(f"{source} is not valid YAML: nested too deeply") from None
    out: list[Resource] = []
    problems: list[str] = []
    for i, doc in enumerate(docs):
        if doc is None:
            continue
        where = f"{source} (document {i + 1})"
        if not isinstance(doc, dict):
            problems.append(f"{where}: must be a map with kind:, metadata:")
            continue
        items = doc.get("items") if doc.get("kind") == "List" else [doc]
        if not isinstance(items, list):
            problems.append(f"{where}: items: must be a list")
            continue
        for j, obj in enumerate(items):
            w = where if doc.get("kind") != "List" else f"{where} items[{j}]"
            try:
                out.append(_resource(obj))
            except (ObjectError, LabError) as e:
                problems.append(f"{w}: {e}")
    if problems:
        raise LabError("\n".join(problems))
    keys: dict[tuple[str, str], int] = {}
    for r in out:
        k = (r.kind, r.key)
        if k in keys:
            raise LabError(f"{source}: {r.describe()} appears twice")
        keys[k] = 1
    return out


def _resource(obj: Any) -> Resource:
    if not isinstance(obj, dict):
        raise LabError("object must be a map")
    kind = obj.get("kind")
    if kind == "Node":
        raise LabError("kind: Node objects come from the lab spec's nodes:, not from apply")
    if kind not in APPLY_KINDS:
        raise LabError(f"kind: {kind!r} is not one of {', '.join(APPLY_KINDS)}")
    parsed = parse_object(obj)
    for field, value in (("metadata.name", parsed.name), ("metadata.namespace", getattr(parsed, "namespace", None))):
        if value is not None and not DNS_LABEL_RE.match(value):
            raise LabError(f"{kind} {parsed.name}: {field}: {value!r} is not a DNS label (a-z, 0-9, '-')")
    raw = copy.deepcopy(obj)
    if kind == "Namespace":
        return Resource(kind, parsed.name, None, raw, dict(parsed.labels))
    if kind in ("NetworkPolicy", "Service", "EndpointSlice"):
        raw.setdefault("metadata", {})["namespace"] = parsed.namespace
        raw.setdefault("apiVersion", {"NetworkPolicy": "networking.k8s.io/v1", "Service": "v1",
                                      "EndpointSlice": "discovery.k8s.io/v1"}[kind])
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return Resource(kind, parsed.name, parsed.namespace, raw, dict(labels))
    ports = [{"port": p.port, "protocol": p.protocol, "name": p.name} for p in parsed.ports]
    seen: set[tuple[int, str]] = set()
    for i, p in enumerate(ports):
        if (p["port"], p["protocol"]) in seen:
            raise LabError(f"Pod {parsed.key}: ports[{i}]: {p['port']}/{p['protocol']} is declared twice")
        seen.add((p["port"], p["protocol"]))
    conditions = ((obj.get("status") or {}).get("conditions")) or []
    ready = parsed.ready or not any(isinstance(c, dict) and c.get("type") == "Ready" for c in conditions)
    return Resource(kind, parsed.name, parsed.namespace, raw, dict(parsed.labels), node=parsed.node, ports=ports,
                    ready=ready)
