"""``novanetctl service list``: the Service frontends as the live load-balancer maps hold them
(read through the dataplane's ``dp.service.list``), with each backend's state."""

from __future__ import annotations

from typing import Any

import click

from novanet_core.cli.plugin_api import dataplane_call, emit, json_shape, output_option, table

SERVICE_JSON = ("[{key, namespace, name, port_name, protocol, ip, port, family, kind, backends: [{ip, port, protocol, "
                "ready, serving, terminating, local, selectable}], affinity_timeout, external_local, failed_closed, "
                "id, selectable}]")


def backend_state(b: dict[str, Any]) -> str:
    """cilium-dbg's words: active (new connections may pick it), terminating (only the connections
    it already has), not-ready (listed, never picked)."""
    if b["selectable"]:
        return "active"
    return "terminating" if b["terminating"] else "not-ready"


def hostport(ip: str, port: int) -> str:
    """``ip:port``, an IPv6 address in brackets (RFC 3986)."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def frontend_rows(services: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for s in services:
        flags = []
        if s["affinity_timeout"]:
            flags.append(f"ClientIP affinity {s['affinity_timeout']}s")
        if s["external_local"]:
            flags.append("externalTrafficPolicy=Local")
        kind = s["kind"] + (f" ({', '.join(flags)})" if flags else "")
        head = [str(s["id"]), f"{hostport(s['ip'], s['port'])}/{s['protocol']}", kind, s["key"]]
        bes = s["backends"] or [None]
        for i, b in enumerate(bes):
            none = "(service maps full: refused)" if s.get("failed_closed") else "(no backend: refused)"
            cell = none if b is None else \
                f"{i + 1} => {hostport(b['ip'], b['port'])}/{b['protocol']} ({backend_state(b)})"
            rows.append((head if i == 0 else ["", "", "", ""]) + [cell])
    return rows


@click.group("service")
def service_group() -> None:
    """Kubernetes Services in the datapath's load-balancer."""


@service_group.command("list")
@output_option
@json_shape(SERVICE_JSON)
def service_list(output: str | None) -> None:
    """Frontends (ClusterIP:port, node IP:nodePort) and their backends, from the live maps."""
    res = dataplane_call("dp.service.list")
    emit(res, lambda r: table(["ID", "FRONTEND", "SERVICE TYPE", "SERVICE", "BACKEND"], frontend_rows(r)), output)
