"""novanetctl commands: ``flows``, ``drops``, ``bpf`` (registered via ``novanet_register_cli``)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from typing import Any

import click

FLOW_COLUMNS = ["TIMESTAMP", "SRC_IP", "DST_IP", "SRC_ID", "DST_ID", "PROTO", "PORT", "VERDICT", "BYTES"]


def _ts(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%H:%M:%S.%f")[:-3]


def flow_row(e: dict[str, Any], with_reason: bool) -> list[str]:
    row = [_ts(e["timestamp"]), e["src_ip"], e["dst_ip"], str(e["src_identity"]), str(e["dst_identity"]),
           e["protocol_name"], str(e["dst_port"]), e["verdict"], str(e["bytes"])]
    if with_reason:
        # POLICY_DENIED names the policy behind it in the same cell (the column set is a stable contract)
        why = e.get("policy_reason") if e["drop_reason_name"] == "POLICY_DENIED" else None
        row.append(f"{e['drop_reason_name']}: {why}" if why else e["drop_reason_name"])
    return row


def table(header: list[str], rows: Iterable[list[str]]) -> str:
    rows = list(rows)
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*header).rstrip()] + [fmt.format(*r).rstrip() for r in rows])


def _obj() -> Any:
    return click.get_current_context().obj


def _output(o: str | None) -> str:
    return o or getattr(_obj(), "output", "table") or "table"


def _stream_flows(identity: int, follow: bool, drops_only: bool, limit: int, out: str) -> None:
    client = _obj().dataplane()
    header = FLOW_COLUMNS + (["DROP_REASON"] if drops_only else [])
    params = {"identity": identity, "drops_only": drops_only, "follow": follow, "limit": limit}
    it = client.stream("ebpf.flows", params)
    if out == "json":
        if follow:
            for e in it:
                click.echo(json.dumps(e))
        else:
            click.echo(json.dumps(list(it), indent=2))
        return
    if not follow:
        click.echo(table(header, (flow_row(e, drops_only) for e in it)))
        return
    widths = [12, 15, 15, 8, 8, 5, 5, 7, 7, 16]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths[: len(header)])
    click.echo(fmt.format(*header).rstrip())
    try:
        for e in it:
            click.echo(fmt.format(*flow_row(e, drops_only)).rstrip())
    except KeyboardInterrupt:
        pass


_output_opt = click.option("-o", "--output", "output", type=click.Choice(["table", "json"]), default=None,
                           help="Output format (default: the global -o).")


@click.command("flows")
@click.option("--identity", type=click.IntRange(0, 0xFFFFFFFF), default=0, help="Only flows from or to it (0 = all).")
@click.option("--follow", "-f", is_flag=True, help="Keep streaming new events (Ctrl-C to stop).")
@click.option("--limit", type=click.IntRange(0), default=100, help="How many recent events to show first.")
@_output_opt
def flows_cmd(identity: int, follow: bool, limit: int, output: str | None) -> None:
    """Flow events from the eBPF datapath (new flows and every drop)."""
    _stream_flows(identity, follow, False, limit, _output(output))


@click.command("drops")
@click.option("--identity", type=click.IntRange(0, 0xFFFFFFFF), default=0, help="Only drops from or to it.")
@click.option("--follow", "-f", is_flag=True, help="Keep streaming new drops (Ctrl-C to stop).")
@click.option("--limit", type=click.IntRange(0), default=100)
@_output_opt
def drops_cmd(identity: int, follow: bool, limit: int, output: str | None) -> None:
    """Dropped packets with their reason, then the per-reason drop counters."""
    out = _output(output)
    client = _obj().dataplane()
    if follow:
        _stream_flows(identity, True, True, limit, out)
        return
    events = list(client.stream("ebpf.flows", {"identity": identity, "drops_only": True, "limit": limit}))
    counters = client.call("ebpf.drops")
    if out == "json":
        click.echo(json.dumps({"events": events, **counters}, indent=2))
        return
    click.echo(table(FLOW_COLUMNS + ["DROP_REASON"], (flow_row(e, True) for e in events)))
    click.echo("")
    click.echo(table(["DROP_REASON", "COUNT"], ([k, str(v)] for k, v in counters["drops"].items())))
    fe = counters["flow_events"]
    click.echo(f"\nFlow events: consumed {fe['consumed']}, lost {fe['lost']} (ring buffer full)")


@click.command("bpf")
@_output_opt
def bpf_cmd(output: str | None) -> None:
    """Per-program run count and average run time (needs kernel.bpf_stats_enabled=1)."""
    st = _obj().dataplane().call("ebpf.bpf_stats")
    if _output(output) == "json":
        click.echo(json.dumps(st, indent=2))
        return
    rows = [[p["name"], p["hook"], str(p["prog_id"]), str(p["run_cnt"]), str(p["run_time_ns"]),
             "-" if p["avg_ns"] is None else f"{p['avg_ns']:.1f}"] for p in st["programs"]]
    click.echo(table(["PROGRAM", "HOOK", "PROG_ID", "RUN_CNT", "RUN_TIME_NS", "AVG_NS"], rows))
    if not st["enabled"]:
        click.echo("\nkernel.bpf_stats_enabled=0: counters do not move (sysctl -w kernel.bpf_stats_enabled=1)")


def _labels(d: dict[str, Any]) -> str:
    lab = ",".join(f"{k}={v}" for k, v in sorted((d.get("labels") or {}).items()))
    return f"{d.get('namespace', '')}:{lab}" if d.get("namespace") else lab


def _peer(p: dict[str, Any]) -> str:
    if p["kind"] == "identity":
        return f"{p['identity']} ({_labels(p)})"
    if p["kind"] == "cidr":
        return p["cidr"] + (f" except {','.join(p['except'])}" if p.get("except") else "")
    return "any"


@click.command("policy")
@click.option("--datapath", is_flag=True, help="Show the live eBPF map entries instead of the compiled rules.")
@_output_opt
def policy_cmd(datapath: bool, output: str | None) -> None:
    """Compiled NetworkPolicy rules: identity pairs with their labels, protocol, ports, action, policy."""
    out = _output(output)
    if datapath:
        res = _obj().dataplane().call("ebpf.policy_entries")
        if out == "json":
            click.echo(json.dumps(res, indent=2))
            return
        rows = [[str(r["set"]), r["peer_kind"], str(r.get("peer_identity", r.get("peer_cidr", "*"))), r["protocol"],
                 r["ports"], f"{r['policy']} {r['origin']}".strip(),
                 ",".join(f"{u['pod']}/{u['direction']}" for u in r["used_by"])] for r in res["rules"]]
        click.echo(table(["SET", "PEER_KIND", "PEER", "PROTO", "PORTS", "POLICY", "USED_BY"], rows))
        click.echo(f"\n{len(res['rules'])} entries, {len(res['cidrs'])} CIDR prefixes, "
                   f"{len(res['endpoints'])} endpoints, policy revision {res['revision']}")
        return
    from novanet_core.cli.novanetctl import run_call

    res = run_call(click.get_current_context(), "policy.list")
    if out == "json":
        click.echo(json.dumps(res, indent=2))
        return
    rows = [[r["endpoint"], r["direction"].upper(), f"{r['identity']} ({_labels(r)})",
             _peer(r["peer"]), r["protocol"], r["ports"], r["action"], f"{r['policy']} {r['origin']}"]
            for r in res["rules"]]
    click.echo(table(["ENDPOINT", "DIR", "LOCAL_ID", "PEER", "PROTO", "PORTS", "ACTION", "POLICY"], rows))
    mode = "defaultDeny" if res["defaultDeny"] else "default allow"
    click.echo(f"\n{len(res['policies'])} policies ({mode}); endpoints not listed are not isolated")
    for name, errs in res["rejected"].items():
        for e in errs:
            click.echo(f"REJECTED {name}: {e}")
    for name, warns in res["warnings"].items():
        for w in warns:
            click.echo(f"WARNING {name}: {w}")


def register(cli: click.Group) -> None:
    for cmd in (flows_cmd, drops_cmd, bpf_cmd, policy_cmd):
        cli.add_command(cmd)
