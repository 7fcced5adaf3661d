"""``novanetctl geneve``: the Geneve programs' view of the overlay (counters, MTU, underlay)."""

from __future__ import annotations

import json

import click


@click.command("geneve")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default=None)
@click.pass_context
def geneve_cmd(ctx: click.Context, output: str | None) -> None:
    """Geneve overlay: underlay device, MTU, per-node tunnels and packet counters."""
    from novanet_core.cli.novanetctl import run_call

    st = run_call(ctx, "geneve.status")
    if (output or ctx.obj.output) == "json":
        click.echo(json.dumps(st, indent=2))
        return
    click.echo(f"Underlay: {st['underlay']} (ifindex {st['ifindex']}, MTU {st['underlayMTU']})")
    click.echo(f"Pod MTU:  {st['podMTU']} (overhead {st['overhead']} B: IPv4 20 + UDP 8 + Geneve 8 + "
               f"identity option 8 + inner Ethernet 14)   VNI {st['vni']}")
    rows = [(t["tunnel"], t["node"], t["nodeIP"], t["nexthop"], t["podCIDR"]) for t in st["tunnels"]]
    if rows:
        w = [max(len(str(r[i])) for r in rows + [("TUNNEL", "NODE", "NODE_IP", "NEXTHOP", "POD_CIDR")])
             for i in range(5)]
        for r in [("TUNNEL", "NODE", "NODE_IP", "NEXTHOP", "POD_CIDR"), *rows]:
            click.echo("  ".join(str(v).ljust(w[i]) for i, v in enumerate(r)).rstrip())
    click.echo("")
    for k, v in st["counters"].items():
        click.echo(f"{k:<20} {v}")
