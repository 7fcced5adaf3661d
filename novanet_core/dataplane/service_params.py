"""Validation of the ``dp.service.*`` parameters: every error names the field path.

The agent is the only caller, but the socket is a public contract (a second agent version, a
test, a debugging session may call it): a bad frontend is refused whole, with
``frontend.backends[2].port: ...``, before the backend sees any of it.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from novanet_core.api.protocol import ApiError
from novanet_core.types import FRONTEND_KINDS, SERVICE_PROTOCOLS, ServiceBackend, ServiceFrontend


def _bad(path: str, msg: str) -> ApiError:
    return ApiError("invalid_params", f"{path}: {msg}")


def _obj(v: Any, path: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise _bad(path, "must be an object")
    return v


def _str(d: dict[str, Any], key: str, path: str, required: bool = True) -> str:
    v = d.get(key, None if required else "")
    if not isinstance(v, str) or (required and not v):
        raise _bad(f"{path}.{key}", "must be a non-empty string" if required else "must be a string")
    return v


def _bool(d: dict[str, Any], key: str, path: str, default: bool) -> bool:
    v = d.get(key, default)
    if not isinstance(v, bool):
        raise _bad(f"{path}.{key}", f"{v!r} is not a boolean")
    return v


def _int(d: dict[str, Any], key: str, path: str, lo: int, hi: int, default: int | None = None) -> int:
    v = d.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise _bad(f"{path}.{key}", f"{v!r} is not an integer {lo}..{hi}")
    return v


def _ip(d: dict[str, Any], key: str, path: str) -> str:
    v = d.get(key)
    try:
        return str(ipaddress.ip_address(v if isinstance(v, str) else ""))
    except ValueError:
        raise _bad(f"{path}.{key}", f"{v!r} is not an IP address") from None


def _protocol(d: dict[str, Any], key: str, path: str, default: str | None = None) -> str:
    v = d.get(key, default)
    if v not in SERVICE_PROTOCOLS:
        raise _bad(f"{path}.{key}", f"{v!r} is not one of {', '.join(SERVICE_PROTOCOLS)}")
    return str(v)


def parse_backend(v: Any, path: str, protocol: str | None = None) -> ServiceBackend:
    """One backend; ``protocol`` (the frontend's) is the default and must match when given."""
    d = _obj(v, path)
    proto = _protocol(d, "protocol", path, protocol or "TCP")
    if protocol is not None and proto != protocol:
        raise _bad(f"{path}.protocol", f"{proto!r} differs from the frontend's {protocol!r}")
    return ServiceBackend(
        ip=_ip(d, "ip", path), port=_int(d, "port", path, 1, 65535), node_name=_str(d, "node_name", path, False),
        local=_bool(d, "local", path, False), ready=_bool(d, "ready", path, True),
        serving=_bool(d, "serving", path, True), terminating=_bool(d, "terminating", path, False),
        protocol=proto)


def parse_frontend(v: Any, path: str = "frontend") -> ServiceFrontend:
    d = _obj(v, path)
    kind = d.get("kind")
    if kind not in FRONTEND_KINDS:
        raise _bad(f"{path}.kind", f"{kind!r} is not one of {', '.join(FRONTEND_KINDS)}")
    proto = _protocol(d, "protocol", path)
    backends = d.get("backends", [])
    if not isinstance(backends, list):
        raise _bad(f"{path}.backends", "must be a list")
    ip = _ip(d, "ip", path)
    parsed = [parse_backend(b, f"{path}.backends[{i}]", proto) for i, b in enumerate(backends)]
    family = ipaddress.ip_address(ip).version
    for i, b in enumerate(parsed):  # kube-proxy: a frontend's endpoints are of its own family
        if ipaddress.ip_address(b.ip).version != family:
            raise _bad(f"{path}.backends[{i}].ip", f"{b.ip!r} is not an IPv{family} address like the frontend's "
                                                  f"ip {ip!r}")
    return ServiceFrontend(
        key=_str(d, "key", path), namespace=_str(d, "namespace", path), name=_str(d, "name", path),
        port_name=_str(d, "port_name", path, False), protocol=proto, ip=ip,
        port=_int(d, "port", path, 1, 65535), kind=str(kind),
        backends=parsed,
        affinity_timeout=_int(d, "affinity_timeout", path, 0, 86400, 0),
        external_local=_bool(d, "external_local", path, False))


def parse_backend_set(v: Any, path: str = "backends") -> list[ServiceBackend]:
    if not isinstance(v, list):
        raise _bad(path, "must be a list")
    return [parse_backend(b, f"{path}[{i}]") for i, b in enumerate(v)]
