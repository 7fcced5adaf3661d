"""Field parsers shared by every kind of the state model; each error names the field path."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

from novanet_core.ipfamily import ipv4_packed

# RFC 1123 label (Kubernetes' DNS_LABEL: port names of Services and EndpointSlices) and IANA
# service name (IANA_SVC_NAME: named targetPorts and container port names, at least one letter).
DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
IANA_SVC_NAME_RE = re.compile(r"^(?=.*[a-z])[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class ObjectError(ValueError):
    def __init__(self, kind: str, name: str, path: str, msg: str):
        self.kind, self.name, self.path = kind, name, path
        super().__init__(f"{kind} {name}: {path}: {msg}")


def labels(kind: str, name: str, path: str, v: Any) -> dict[str, str]:
    if v is None:
        return {}
    if not isinstance(v, Mapping):
        raise ObjectError(kind, name, path, "must be a map of string to string")
    out = {}
    for k, val in v.items():
        if not isinstance(k, str) or not k:
            raise ObjectError(kind, name, path, f"label key {k!r} must be a non-empty string")
        if isinstance(val, (bool, Mapping, list)) or val is None:
            raise ObjectError(kind, name, f"{path}.{k}", "label value must be a string")
        out[k] = str(val)
    return out


def ip(kind: str, name: str, path: str, v: Any) -> str | None:
    if v is None or v == "":
        return None
    if not isinstance(v, str):  # ip_address() would take an int as an address
        raise ObjectError(kind, name, path, f"{v!r} is not an IP address string")
    if ipv4_packed(v) is not None:
        # Already canonical (IPv4 has one spelling): ip_address() for each of a start's
        # 60,000 pod and host addresses was seconds of it at 30,000 pods.
        return v
    try:
        return str(ipaddress.ip_address(v))
    except ValueError:
        raise ObjectError(kind, name, path, f"{v!r} is not an IP address") from None


def _object_name_ok(v: str) -> bool:
    # "/" joins namespace and name into the object key; the rest can never be a Kubernetes name.
    return len(v) <= 253 and "/" not in v and v.isprintable() and not any(c.isspace() for c in v)


def meta(obj: Mapping[str, Any], kind: str, namespaced: bool) -> tuple[str, str, dict[str, str]]:
    m = obj.get("metadata")
    if not isinstance(m, Mapping):
        raise ObjectError(kind, "?", "metadata", "is required")
    name = m.get("name")
    if not isinstance(name, str) or not name:
        raise ObjectError(kind, "?", "metadata.name", "is required")
    if not _object_name_ok(name):
        raise ObjectError(kind, "?", "metadata.name",
                          f"{name[:80]!r} is not a valid object name (no '/', spaces or control characters)")
    ns = m.get("namespace") or ("default" if namespaced else "")
    if namespaced and not isinstance(ns, str):
        raise ObjectError(kind, name, "metadata.namespace", "must be a string")
    if namespaced and not _object_name_ok(ns):
        raise ObjectError(kind, name, "metadata.namespace", f"{ns[:80]!r} is not a valid namespace name")
    return name, ns, labels(kind, name, "metadata.labels", m.get("labels"))


def port_number(kind: str, name: str, path: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 65535:
        raise ObjectError(kind, name, path, f"{v!r} is not a port number 1..65535")
    return v


def one_of(kind: str, name: str, path: str, v: Any, allowed: tuple[str, ...], default: str | None = None) -> str:
    if v is None and default is not None:
        return default
    if v not in allowed:
        raise ObjectError(kind, name, path, f"{v!r} is not one of {', '.join(allowed)}")
    return str(v)


def mapping(kind: str, name: str, path: str, v: Any) -> Mapping[str, Any]:
    if v is None:
        return {}
    if not isinstance(v, Mapping):
        raise ObjectError(kind, name, path, "must be a map")
    return v


def sequence(kind: str, name: str, path: str, v: Any) -> list[Any]:
    if v is None:
        return []
    if not isinstance(v, list):
        raise ObjectError(kind, name, path, "must be a list")
    return v


def optional_bool(kind: str, name: str, path: str, v: Any) -> bool | None:
    if v is None or isinstance(v, bool):
        return v
    raise ObjectError(kind, name, path, f"{v!r} is not a boolean")
