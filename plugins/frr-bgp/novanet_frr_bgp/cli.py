"""``novanetctl routing ...``: status, peers, prefixes, bfd (table or ``-o json``), plus reconcile
and advertise/withdraw of this node's PodCIDR."""

from __future__ import annotations

from typing import Any

import click

from novanet_core.cli.plugin_api import agent_call, emit_json, json_shape, output_format, output_option, table


def run_call(ctx: click.Context, method: str, params: dict[str, Any] | None = None) -> Any:
    return agent_call(method, params, ctx)


def _fmt(ctx: click.Context, output: str | None) -> str:
    return output_format(output, ctx)


def add_commands(cli: click.Group) -> None:
    if "routing" in cli.commands:
        return

    @cli.group()
    def routing() -> None:
        """Native routing (FRR BGP): status, peers, prefixes, BFD."""

    @routing.command()
    @output_option
    @json_shape("{backend, connected, daemons, asn, routerId, mode, podCIDR, advertising, bfd, gracefulRestart, timers, vtysh, desiredNeighbors, reconciles, applies, rollbacks, failures, lastApply, lastError}")
    @click.pass_context
    def status(ctx: click.Context, output: str | None) -> None:
        """FRR connection, ASN, router-id, mode, last configuration change."""
        st = run_call(ctx, "routing.status")
        if _fmt(ctx, output) == "json":
            return emit_json(st)
        la = st.get("lastApply") or {}
        bfd = st.get("bfd") or {}
        lines = [
            "Routing Status", "==============",
            "Routing Mode:      native",
            f"Backend:           {st['backend']}",
            f"FRR Connected:     {str(st['connected']).lower()}" + (f" ({' '.join(st['daemons'])})" if st.get("daemons") else ""),
            f"Local AS:          {st.get('asn')}",
            f"Router ID:         {st.get('routerId')}",
            f"Peering:           {st.get('mode')} ({st.get('desiredNeighbors')} neighbors)",
            f"Pod CIDR:          {st.get('podCIDR')} ({'advertised' if st.get('advertising') else 'withdrawn'})",
            "BFD:               " + (f"on ({bfd['receiveInterval']} ms x {bfd['detectMultiplier']})" if bfd.get("enabled") else "off"),
            "Graceful Restart:  " + ("on" if (st.get("gracefulRestart") or {}).get("enabled") else "off"),
            f"Config Changes:    {st.get('applies')} applied, {st.get('failures')} failed, {st.get('rollbacks')} rolled back",
        ]
        if la:
            lines.append(f"Last Change:       {'ok' if la.get('ok') else 'FAILED'} ({la.get('reason')}, {len(la.get('commands', []))} commands)")
        if st.get("lastError"):
            lines.append(f"Last Error:        {st['lastError']}")
        click.echo("\n".join(lines))

    @routing.command()
    @output_option
    @json_shape("[{neighbor, remoteAs, state, pfxRcvd, pfxSent, bfd, uptime, ...}]")
    @click.pass_context
    def peers(ctx: click.Context, output: str | None) -> None:
        """BGP neighbors: NEIGHBOR REMOTE_AS STATE PFX_RCVD PFX_SENT BFD UPTIME."""
        rows = run_call(ctx, "routing.peers")
        if _fmt(ctx, output) == "json":
            return emit_json(rows)
        if not rows:
            click.echo("No BGP peers configured.")
            return
        click.echo(table(["NEIGHBOR", "REMOTE_AS", "STATE", "PFX_RCVD", "PFX_SENT", "BFD", "UPTIME"],
                         [(r["neighbor"], r["remoteAs"], r["state"], r["pfxRcvd"], r["pfxSent"], r["bfd"], r["uptime"])
                          for r in rows]))

    @routing.command()
    @output_option
    @json_shape("[{prefix, direction, nextHop, asPath, best}]")
    @click.pass_context
    def prefixes(ctx: click.Context, output: str | None) -> None:
        """Prefixes this node advertises and the ones it learned."""
        rows = run_call(ctx, "routing.prefixes")
        if _fmt(ctx, output) == "json":
            return emit_json(rows)
        if not rows:
            click.echo("No prefixes advertised.")
            return
        click.echo(table(["PREFIX", "DIRECTION", "NEXT_HOP", "AS_PATH", "BEST"],
                         [(r["prefix"], r["direction"], r["nextHop"], r["asPath"], "*" if r["best"] else "")
                          for r in rows]))

    @routing.command()
    @output_option
    @json_shape("[{peer, status, receiveInterval, transmitInterval, detectMultiplier, uptime}]")
    @click.pass_context
    def bfd(ctx: click.Context, output: str | None) -> None:
        """BFD sessions: PEER STATUS MIN_RX MIN_TX DETECT_MULT UPTIME."""
        rows = run_call(ctx, "routing.bfd")
        if _fmt(ctx, output) == "json":
            return emit_json(rows)
        if not rows:
            click.echo("No BFD sessions.")
            return
        click.echo(table(["PEER", "STATUS", "MIN_RX", "MIN_TX", "DETECT_MULT", "UPTIME"],
                         [(r["peer"], r["status"], _ms(r["receiveInterval"]), _ms(r["transmitInterval"]),
                           r["detectMultiplier"], _secs(r["uptime"])) for r in rows]))

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

    for name, on in (("advertise", True), ("withdraw", False)):
        def _cmd(ctx: click.Context, output: str | None, _on: bool = on) -> None:
            rep = run_call(ctx, "routing.advertise", {"on": _on})
            if _fmt(ctx, output) == "json":
                return emit_json(rep)
            click.echo("ok" if rep.get("ok") else f"failed: {rep.get('error')}")

        _cmd.__doc__ = ("Advertise" if on else "Withdraw (drain)") + " this node's PodCIDR."
        routing.command(name)(output_option(json_shape("{ok, error?}")(click.pass_context(_cmd))))


def _ms(v: Any) -> str:
    return "-" if v is None else f"{v}ms"


def _secs(v: Any) -> str:
    if not isinstance(v, int):
        return "-"
    h, rem = divmod(v, 3600)
    m, s = divmod(rem, 60)
    return f"{h:02d}:{m:02d}:{s:02d}"
