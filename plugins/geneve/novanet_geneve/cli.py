"""``novanetctl geneve``: the Geneve programs' view of the overlay (counters, MTU, underlay)."""

from __future__ import annotations

from typing import Any

import click

from novanet_core.cli.plugin_api import agent_call, emit, json_shape, output_option, table


@click.command("geneve")
@output_option
@json_shape("{underlay, ifindex, underlayMTU, underlayFamily, podMTU, overhead, vni, tunnels: [{tunnel, node, nodeIP, nexthop, "
            "podCIDR}], counters: {EVENT: count}}")
def geneve_cmd(output: str | None) -> None:
    """Geneve overlay: underlay device, MTU, per-node tunnels and packet counters."""
    emit(agent_call("geneve.status"), _render, output)


def _render(st: dict[str, Any]) -> str:
    outer = "IPv6 40" if st.get("underlayFamily") == 6 else "IPv4 20"
    lines = [f"Underlay: {st['underlay']} (ifindex {st['ifindex']}, MTU {st['underlayMTU']})",
             f"Pod MTU:  {st['podMTU']} (overhead {st['overhead']} B: {outer} + UDP 8 + Geneve 8 + "
             f"identity option 8 + inner Ethernet 14)   VNI {st['vni']}"]
    rows = [(t["tunnel"], t["node"], t["nodeIP"], t["nexthop"], t["podCIDR"]) for t in st["tunnels"]]
    if rows:
        lines.append(table(["TUNNEL", "NODE", "NODE_IP", "NEXTHOP", "POD_CIDR"], rows))
    lines.append("")
    lines += [f"{k:<20} {v}" for k, v in st["counters"].items()]
    return "\n".join(lines)
