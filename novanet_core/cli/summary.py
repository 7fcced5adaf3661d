"""``novanetctl metrics``: the node's summary statistics, read live from the agent and the datapath."""

from __future__ import annotations

from typing import Any

import click

from novanet_core.cli.plugin_api import (
    agent_call,
    dataplane_call,
    emit_json,
    json_shape,
    output_format,
    output_option,
)
from novanet_core.cli.plugin_api import table as _table

POLICY_REASONS = ("POLICY_DENIED", "POLICY_DENY_RULE")


def _ms(v: Any) -> str:
    return "-" if v is None else f"{v:.2f} ms"


def summary_text(a: dict[str, Any], d: dict[str, Any] | None) -> str:
    lines = ["NOVANET METRICS SUMMARY", "=======================",
             f"Node:               {a['node']}",
             f"Endpoints:          {a['endpoints']} local, {a['remoteEndpoints']} remote",
             f"Identities:         {a['identities']}",
             f"Policies:           {a['policies']} ({a['rejectedPolicies']} rejected)",
             f"Tunnels:            {a['tunnels']}",
             f"Nodes:              {a['nodes']}",
             f"Dataplane:          {'connected' if a['dataplaneConnected'] else 'disconnected'}"]
    prog = a.get("policyProgramming") or {}
    if prog.get("count"):
        lines.append(f"Policy programming: p50 {_ms((prog.get('p50') or 0) * 1e3)}, p99 {_ms((prog.get('p99') or 0) * 1e3)}"
                     f" over {prog['count']} changes")
    r = a.get("routing")
    if r:
        lines.append(f"Routing:            {r.get('backend')} {'connected' if r.get('connected') else 'NOT connected'}"
                     + (f", {r['sessions']}" if r.get("sessions") else ""))
    lines += ["", _table(["CNI", "SUCCESS", "ERROR", "P50", "P99"],
                         [(op, c["success"], c["error"], _ms(c["p50_ms"]), _ms(c["p99_ms"]))
                          for op, c in a["cni"].items()]) if a["cni"] else "CNI: no operations yet"]
    if d is None:
        lines += ["", "Datapath: this datapath keeps no counters (no stats section)"]
        return "\n".join(lines)
    rows = []
    for direction, codes in d.get("traffic", {}).items():
        for code, c in codes.items():
            if c["packets"] or code in ("FORWARDED", "NEW_FLOW"):
                what = {"FORWARDED": "forwarded", "NEW_FLOW": "connections admitted"}.get(code, f"dropped {code}")
                rows.append((direction, what, c["packets"], c["bytes"] if code != "NEW_FLOW" else "-"))
    lines += ["", _table(["DIRECTION", "WHAT", "PACKETS", "BYTES"], rows)]
    denied = sum(c["packets"] for codes in d.get("traffic", {}).values() for k, c in codes.items() if k in POLICY_REASONS)
    admitted = sum(codes.get("NEW_FLOW", {}).get("packets", 0) for codes in d.get("traffic", {}).values())
    fe = d.get("flow_events", {})
    lines += ["", f"Policy verdicts:    {admitted} connections admitted, {denied} packets denied",
              f"Flow events:        {fe.get('submitted', 0)} submitted, {fe.get('consumed', 0)} consumed, "
              f"{fe.get('lost', 0)} lost (ring buffer full), {fe.get('follower_dropped', 0)} not taken by a follower",
              f"Egress rules:       {d.get('egress_rules', 0)}"]
    ex = d.get("export")
    if ex:
        lines.append(f"Flow export:        {ex['exported']} exported, {ex['socket_dropped']} lost by slow readers, "
                     f"{ex['rotations']} rotations")
    maps = [(m["name"], m["entries"], m["max_entries"], f"{100 * m['entries'] / m['max_entries']:.1f} %")
            for m in d.get("maps", []) if m["max_entries"]]
    if maps:
        lines += ["", _table(["MAP", "ENTRIES", "MAX", "FILL"], maps)]
    return "\n".join(lines)


@click.command("metrics")
@output_option
@json_shape("{agent: {node, ready, dataplaneConnected, endpoints, identities, remoteEndpoints, nodes, policies, "
            "rejectedPolicies, policyProgramming{count, p50, p99, max}, tunnels, cni: {OP: {success, error, p50_ms, "
            "p99_ms, samples}}, routing?}, datapath: {traffic: {egress|ingress: {FORWARDED|NEW_FLOW|<reason>: "
            "{packets, bytes}}}, drops, flow_events, maps: [{name, type, entries, max_entries}], egress_rules, "
            "export} or null}")
def metrics_cmd(output: str | None) -> None:
    """Summary statistics: forwarded and dropped packets by reason and direction, verdicts, flows, CNI, maps."""
    a = agent_call("metrics.summary")
    d = dataplane_call("dp.stats", missing_ok=True)
    if a.get("routing"):
        peers = agent_call("routing.peers", missing_ok=True) or []
        states: dict[str, int] = {}
        for pr in peers:
            states[pr.get("state", "?")] = states.get(pr.get("state", "?"), 0) + 1
        a["routing"]["sessions"] = ", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "no sessions"
    if output_format(output) == "json":
        emit_json({"agent": a, "datapath": d})
        return
    click.echo(summary_text(a, d))
