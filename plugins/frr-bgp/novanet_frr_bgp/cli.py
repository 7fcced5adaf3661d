"""``novanetctl routing ...``: status, peers, prefixes, bfd (table or ``-o json``), plus reconcile
and advertise/withdraw of this node's PodCIDR."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from novanet_core.cli.plugin_api import agent_call, emit_json, json_shape, output_format, output_option, table


def run_call(ctx: click.Context, method: str, params: dict[str, Any] | None = None) -> Any:
    return agent_call(method, params, ctx)


def _fmt(ctx: click.Context, output: str | None) -> str:
    return output_format(output, ctx)


def add_commands(cli: click.Group) -> None:
    if "routing" not in cli.commands:
        cli.add_command(routing)


def _show_rows(
    ctx: click.Context,
    output: str | None,
    method: str,
    empty: str,
    headers: list[str],
    row: Callable[[dict[str, Any]], tuple[Any, ...]],
) -> None:
    rows = run_call(ctx, method)
    if _fmt(ctx, output) == "json":
        return emit_json(rows)
    if not rows:
        click.echo(empty)
        return
    click.echo(table(headers, [row(r) for r in rows]))


@click.group("routing")
def routing() -> None:
    """Native routing (FRR BGP): status, peers, prefixes, BFD."""


@routing.command()
@output_option
@json_shape(
    "{backend, connected, daemons, asn, routerId, mode, podCIDR, advertising, bfd, gracefulRestart, timers, vtysh, desiredNeighbors, reconciles, applies, rollbacks, failures, lastApply, lastError, heldRoutes}"
)
@click.pass_context
def status(ctx: click.Context, output: str | None) -> None:
    """FRR connection, ASN, router-id, mode, last configuration change."""
    st = run_call(ctx, "routing.status")
    if _fmt(ctx, output) == "json":
        return emit_json(st)
    la = st.get("lastApply") or {}
    bfd = st.get("bfd") or {}
    lines = [
        "Routing Status",
        "==============",
        "Routing Mode:      native",
        f"Backend:           {st['backend']}",
        f"FRR Connected:     {str(st['connected']).lower()}"
        + (f" ({' '.join(st['daemons'])})" if st.get("daemons") else ""),
        f"Local AS:          {st.get('asn')}",
        f"Router ID:         {st.get('routerId')}",
        f"Peering:           {st.get('mode')} ({st.get('desiredNeighbors')} neighbors)",
        f"Pod CIDR:          {st.get('podCIDR')} ({'advertised' if st.get('advertising') else 'withdrawn'})",
        "BFD:               "
        + (f"on ({bfd['receiveInterval']} ms x {bfd['detectMultiplier']})" if bfd.get("enabled") else "off"),
        "Graceful Restart:  " + ("on" if (st.get("gracefulRestart") or {}).get("enabled") else "off"),
        f"Config Changes:    {st.get('applies')} applied, {st.get('failures')} failed, {st.get('rollbacks')} rolled back",
    ]
    if la:
        lines.append(
            f"Last Change:       {'ok' if la.get('ok') else 'FAILED'} ({la.get('reason')}, {len(la.get('commands', []))} commands)"
        )
    if st.get("lastError"):
        lines.append(f"Last Error:        {st['lastError']}")
    click.echo("\n".join(lines))


@routing.command()
@output_option
@json_shape("[{neighbor, remoteAs, state, pfxRcvd, pfxSent, bfd, uptime, ...}]")
@click.pass_context
def peers(ctx: click.Context, output: str | None) -> None:
    """BGP neighbors: NEIGHBOR REMOTE_AS STATE PFX_RCVD PFX_SENT BFD UPTIME."""
    _show_rows(
        ctx,
        output,
        "routing.peers",
        "No BGP peers configured.",
        ["NEIGHBOR", "REMOTE_AS", "STATE", "PFX_RCVD", "PFX_SENT", "BFD", "UPTIME"],
        lambda r: (
            r["neighbor"],
            r["remoteAs"],
            r["state"],
            r["pfxRcvd"],
            r["pfxSent"],
            r["bfd"],
            r["uptime"],
        ),
    )


@routing.command()
@output_option
@json_shape("[{prefix, direction, nextHop, asPath, best}]")
@click.pass_context
def prefixes(ctx: click.Context, output: str | None) -> None:
    """Prefixes this node advertises and the ones it learned."""
    _show_rows(
        ctx,
        output,
        "routing.prefixes",
        "No prefixes advertised.",
        ["PREFIX", "DIRECTION", "NEXT_HOP", "AS_PATH", "BEST"],
        lambda r: (r["prefix"], r["direction"], r["nextHop"], r["asPath"], "*" if r["best"] else ""),
    )


@routing.command()
@output_option
@json_shape("[{peer, status, receiveInterval, transmitInterval, detectMultiplier, uptime}]")
@click.pass_context
def bfd(ctx: click.Context, output: str | None) -> None:
    """BFD sessions: PEER STATUS MIN_RX MIN_TX DETECT_MULT UPTIME."""
    _show_rows(
        ctx,
        output,
        "routing.bfd",
        "No BFD sessions.",
        ["PEER", "STATUS", "MIN_RX", "MIN_TX", "DETECT_MULT", "UPTIME"],
        lambda r: (
            r["peer"],
            r["status"],
            _ms(r["receiveInterval"]),
            _ms(r["transmitInterval"]),
            r["detectMultiplier"],
            _secs(r["uptime"]),
        ),
    )


@routing.command()
@output_option
@json_shape("{ok, error?, commands: [str]}")
@click.pass_context
def reconcile(ctx: click.Context, output: str | None) -> None:
    """Apply the difference between FRR and the desired state now."""
    rep = run_call(ctx, "routing.reconcile")
    if _fmt(ctx, output) == "json":
        return emit_json(rep)
    cmds = rep.get("commands") or []
    click.echo(("ok" if rep.get("ok") else f"failed: {rep.get('error')}") + f" ({len(cmds)} commands)")
    for c in cmds:
        click.echo(f"  {c.strip()}")


def _advertise_command(name: str, on: bool) -> None:
    def cmd(ctx: click.Context, output: str | None) -> None:
        rep = run_call(ctx, "routing.advertise", {"on": on})
        if _fmt(ctx, output) == "json":
            return emit_json(rep)
        click.echo("ok" if rep.get("ok") else f"failed: {rep.get('error')}")

    cmd.__doc__ = ("Advertise" if on else "Withdraw (drain)") + " this node's PodCIDR."
    routing.command(name)(output_option(json_shape("{ok, error?}")(click.pass_context(cmd))))


_advertise_command("advertise", True)
_advertise_command("withdraw", False)


def _ms(v: Any) -> str:
    return "-" if v is None else f"{v}ms"


def _secs(v: Any) -> str:
    if not isinstance(v, int):
        return "-"
    h, rem = divmod(v, 3600)
    m, s = divmod(rem, 60)
    return f"{h:02d}:{m:02d}:{s:02d}"
