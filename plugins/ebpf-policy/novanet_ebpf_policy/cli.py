"""novanetctl commands of the eBPF datapath: ``flows``, ``drops``, ``bpf``, ``policy``.

Registered via ``novanet_register_cli``; built on :mod:`novanet_core.cli.plugin_api` only.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import Any

import click

from novanet_core.cli.flowfmt import FLOW_COLUMNS, compact_line, flow_row, parse_since
from novanet_core.cli.plugin_api import (
    agent_call,
    dataplane_call,
    dataplane_stream,
    emit_json,
    emit_json_line,
    json_shape,
    output_format,
    output_option,
    table,
)
from novanet_core.protocols import IP_PROTOCOLS, L4_PROTOCOLS
from novanet_ebpf_policy.flowfilter import TCP_FLAGS, FilterError, FlowFilter
from novanet_ebpf_policy.layouts import DropReason

FLOW_JSON = ("one object per line: {timestamp, timestamp_ns, node, src_ip, dst_ip, src_pod, dst_pod, src_identity, "
             "dst_identity, protocol, protocol_name, src_port, dst_port, verdict, drop_reason, drop_reason_name, "
             "tcp_flags, tcp_flags_names, bytes, packets, hook, direction, policy_dir, policy_set, "
             "policy_reason?, policies?}")


# ---------------------------------------------------------------------- filter options

def _label_pairs(values: Iterable[str], opt: str) -> dict[str, str]:
    out = {}
    for v in values:
        k, sep, val = v.partition("=")
        if not sep or not k:
            raise click.BadParameter(f"{v!r} is not KEY=VALUE", param_hint=opt)
        out[k] = val
    return out


def _identities_with(labels: dict[str, str]) -> frozenset[int]:
    """Labels are resolved by the agent (it knows every pod's labels); the dataplane filters ids."""
    ids = agent_call("identity.list")
    return frozenset(i["id"] for i in ids if all(i.get("labels", {}).get(k) == v for k, v in labels.items()))


def filter_options(f: Any) -> Any:
    opts = [
        click.option("--identity", type=click.IntRange(0, 0xFFFFFFFF), default=0,
                     help="Only flows from or to this identity (0 = all)."),
        click.option("--pod", default=None, metavar="NS/POD", help="From or to this pod."),
        click.option("--from-pod", default=None, metavar="NS/POD", help="From this pod."),
        click.option("--to-pod", default=None, metavar="NS/POD", help="To this pod."),
        click.option("--namespace", default=None, metavar="NS", help="From or to a pod of this namespace."),
        click.option("--from-namespace", default=None, metavar="NS"),
        click.option("--to-namespace", default=None, metavar="NS"),
        click.option("--label", "labels", multiple=True, metavar="KEY=VALUE",
                     help="From or to pods with these labels (repeat: all must match)."),
        click.option("--from-label", "from_labels", multiple=True, metavar="KEY=VALUE"),
        click.option("--to-label", "to_labels", multiple=True, metavar="KEY=VALUE"),
        click.option("--ip", default=None, metavar="IP|CIDR", help="From or to this address or block."),
        click.option("--from-ip", default=None, metavar="IP|CIDR"),
        click.option("--to-ip", default=None, metavar="IP|CIDR"),
        click.option("--port", type=click.IntRange(0, 65535), default=None, help="Source or destination port."),
        click.option("--protocol", type=click.Choice(list(IP_PROTOCOLS), case_sensitive=False), default=None),
        click.option("--verdict", type=click.Choice(["ALLOW", "DENY", "FORWARDED", "DROPPED"], case_sensitive=False),
                     default=None),
        click.option("--reason", "reasons", multiple=True,
                     type=click.Choice([r.name for r in DropReason if r], case_sensitive=False),
                     help="Drop reason (repeatable)."),
        click.option("--tcp-flags", default=None, metavar="SYN,FIN,...", help="Any of these TCP flags."),
        click.option("--since", default=None, metavar="DURATION|TIME",
                     help="Only events after this (30s, 5m, 2h, an ISO time, epoch seconds)."),
        click.option("--last", "--limit", "last", type=click.IntRange(0), default=100, show_default=True,
                     help="How many recent events to show (before following)."),
        click.option("-f", "--follow", is_flag=True, help="Keep streaming new events (Ctrl-C to stop)."),
        click.option("-o", "--output", type=click.Choice(["table", "compact", "json"]), default=None,
                     help="table (the original columns), compact (one line naming pods), json (one object per line)."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def build_filter(kw: dict[str, Any], drops_only: bool = False) -> FlowFilter:
    raw: dict[str, Any] = {k: kw[k] for k in ("identity", "pod", "from_pod", "to_pod", "namespace", "from_namespace",
                                              "to_namespace", "ip", "from_ip", "to_ip", "port", "protocol",
                                              "verdict") if kw.get(k) not in (None, 0)}
    for key, opt in (("labels", "identities"), ("from_labels", "from_identities"), ("to_labels", "to_identities")):
        if kw.get(key):
            labels = _label_pairs(kw[key], "--" + key.rstrip("s").replace("_", "-"))
            ids = _identities_with(labels)
            if not ids:
                click.echo(f"note: no identity has labels {labels}; nothing can match", err=True)
            raw[opt] = sorted(ids)
    if kw.get("reasons"):
        raw["reasons"] = [r.upper() for r in kw["reasons"]]
    if kw.get("tcp_flags"):
        flags = [x.strip().upper() for x in kw["tcp_flags"].split(",") if x.strip()]
        bad = [x for x in flags if x not in TCP_FLAGS]
        if bad:
            raise click.BadParameter(f"{bad[0]!r} is not one of {', '.join(TCP_FLAGS)}", param_hint="--tcp-flags")
        raw["tcp_flags"] = flags
    if kw.get("since"):
        raw["since"] = parse_since(kw["since"])
    if drops_only:
        raw["drops_only"] = True
    try:
        return FlowFilter.from_params(raw)
    except FilterError as e:
        raise click.UsageError(str(e)) from None


def _events(flt: FlowFilter, follow: bool, last: int) -> Iterator[dict[str, Any]]:
    return dataplane_stream("dp.flows", {"follow": follow, "limit": last, "filter": flt.to_params()})


def print_events(events: Iterable[dict[str, Any]], out: str, follow: bool, with_reason: bool) -> None:
    header = FLOW_COLUMNS + (["DROP_REASON"] if with_reason else [])
    try:
        if out == "json":
            for e in events:
                emit_json_line(e)
        elif out == "compact":
            for e in events:
                click.echo(compact_line(e))
        elif not follow:
            click.echo(table(header, (flow_row(e, with_reason) for e in events)))
        else:
            widths = [12, 15, 15, 8, 8, 5, 5, 7, 7, 16]
            fmt = "  ".join(f"{{:<{w}}}" for w in widths[: len(header)])
            click.echo(fmt.format(*header).rstrip())
            for e in events:
                click.echo(fmt.format(*flow_row(e, with_reason)).rstrip())
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:  # `| head`: the reader left; not an error
        sys.stderr.close()


@click.command("flows")
@filter_options
@json_shape(FLOW_JSON)
def flows_cmd(follow: bool, last: int, output: str | None, **kw: Any) -> None:
    """Flow events from the eBPF datapath (new flows and every drop), filtered like Hubble's observe."""
    flt = build_filter(kw)
    print_events(_events(flt, follow, last), output_format(output), follow, False)


@click.command("drops")
@filter_options
@json_shape("without -f: {events: [flow objects], drops: {REASON: count}, flow_events: {submitted, lost, "
            "new_flows, consumed, follower_dropped, skipped}}; with -f: one flow object per line")
def drops_cmd(follow: bool, last: int, output: str | None, **kw: Any) -> None:
    """Dropped packets with their reason, then the per-reason drop counters."""
    out = output_format(output)
    flt = build_filter(kw, drops_only=True)
    if follow:
        print_events(_events(flt, True, last), out, True, True)
        return
    events = list(_events(flt, False, last))
    counters = dataplane_call("ebpf.drops")
    if out == "json":
        emit_json({"events": events, **counters})
        return
    if out == "compact":
        print_events(events, out, False, True)
    else:
        click.echo(table(FLOW_COLUMNS + ["DROP_REASON"], (flow_row(e, True) for e in events)))
    click.echo("")
    click.echo(table(["DROP_REASON", "COUNT"], ([k, str(v)] for k, v in counters["drops"].items())))
    fe = counters["flow_events"]
    click.echo(f"\nFlow events: consumed {fe['consumed']}, lost {fe['lost']} (ring buffer full)")


@click.command("bpf")
@output_option
@json_shape("{enabled, programs: [{name, hook, prog_id, tag, run_cnt, run_time_ns, avg_ns}]}")
def bpf_cmd(output: str | None) -> None:
    """Per-program run count and average run time (needs kernel.bpf_stats_enabled=1)."""
    st = dataplane_call("ebpf.bpf_stats")
    if output_format(output) == "json":
        emit_json(st)
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


def _policy_datapath(out: str) -> None:
    res = dataplane_call("ebpf.policy_entries")
    if out == "json":
        emit_json(res)
        return
    rows = [[str(r["set"]), r["peer_kind"], str(r.get("peer_identity", r.get("peer_cidr", "*"))), r["protocol"],
             r["ports"], f"{r['policy']} {r['origin']}".strip(),
             ",".join(f"{u['pod']}/{u['direction']}" for u in r["used_by"])] for r in res["rules"]]
    click.echo(table(["SET", "PEER_KIND", "PEER", "PROTO", "PORTS", "POLICY", "USED_BY"], rows))
    click.echo(f"\n{len(res['rules'])} entries, {len(res['cidrs'])} CIDR prefixes, "
               f"{len(res['endpoints'])} endpoints, policy revision {res['revision']}")


@click.group("policy", invoke_without_command=True)
@click.option("--datapath", is_flag=True, help="Show the live eBPF map entries instead of the compiled rules.")
@output_option
@json_shape("{defaultDeny, rules: [{endpoint, ips, identity, namespace, labels, direction, peer{kind, identity?, "
            "namespace?, labels?, cidr?, except?}, protocol, ports, action, policy, origin}], rejected, warnings, "
            "policies}; with --datapath: {rules: [{set, peer_kind, peer_identity?, peer_cidr?, protocol, ports, "
            "policy, origin, used_by}], cidrs, endpoints, revision}")
@click.pass_context
def policy_cmd(ctx: click.Context, datapath: bool, output: str | None) -> None:
    """Compiled NetworkPolicy rules: identity pairs with their labels, protocol, ports, action, policy."""
    if ctx.invoked_subcommand is not None:
        return
    out = output_format(output)
    if datapath:
        _policy_datapath(out)
        return
    res = agent_call("policy.list")
    if out == "json":
        emit_json(res)
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


def _who(e: dict[str, Any]) -> str:
    if not e.get("pod"):
        return f"{e['ip']} (not a pod)"
    return f"{e['pod']} ({e['ip'] or 'no IP'}, identity {e['identity']}, node {e['node']})"


def compare(compiled: dict[str, Any], live: dict[str, Any] | None, node: str) -> dict[str, Any]:
    """Per side decided on this node: does the datapath's map lookup give the compiled answer?"""
    out: dict[str, Any] = {}
    for side in ("egress", "ingress"):
        c = compiled.get(side)
        if c is None:
            continue
        if c.get("decided_on") != node or live is None:
            out[side] = {"checked": False, "why": f"decided on node {c.get('decided_on')}: run this there "
                                                  f"(novanetctl --node {c.get('decided_on')} ...)"}
            continue
        lv = live.get(side) or {}
        if side == "egress" and live.get("egress_map") and live["egress_map"]["action"] == "DENY":
            lv = {"allowed": False, "why": "egress map: DENY"}
        agree = bool(lv.get("allowed")) == bool(c["allowed"])
        out[side] = {"checked": True, "datapath_allowed": lv.get("allowed"), "agrees": agree, "datapath": lv}
    out["agree"] = all(v.get("agrees", True) for v in out.values() if isinstance(v, dict))
    return out


def explain_text(res: dict[str, Any], cmp: dict[str, Any], live: dict[str, Any] | None) -> str:
    lines = [f"{_who(res['from'])} -> {_who(res['to'])} {res['protocol']}/{res['port']}", ""]
    for side, who in (("egress", res["from"]), ("ingress", res["to"])):
        c = res.get(side)
        if c is None:
            continue
        lines.append(f"{side} of {who['pod']}: {'ALLOWED' if c['allowed'] else 'DENIED'}: {c['why']}")
        for a in c.get("admitted_by", []):
            lines.append(f"  rule {a['policy']} {a['origin']}: peer {a['peer']}, ports {a['ports']}")
        k = cmp.get(side, {})
        if not k.get("checked"):
            lines.append(f"  datapath: not checked here, {k.get('why')}")
        else:
            d = k["datapath"]
            hits = "; ".join(f"{h['peer']} -> {h['rule']}" for h in d.get("hits", []))
            lines.append(f"  datapath: {'ALLOW' if k['datapath_allowed'] else 'DENY'} ({d.get('why', '')}"
                         + (f"; hits: {hits}" if hits else "") + ") "
                         + ("agrees" if k["agrees"] else "DISAGREES with the compiled answer"))
        lines.append("")
    if live and live.get("egress_map"):
        e = live["egress_map"]
        lines.append(f"egress map: source {e['src_identity'] or '*'} rule {e['rule']}: {e['action']}"
                     + (f" to {e['snat_ip']}" if e.get("snat_ip") else ""))
    lines.append(f"verdict: {res['verdict']}" + ("" if cmp.get("agree", True) else
                                                 "  (the datapath disagrees: see above; `novanetctl reconcile`)"))
    return "\n".join(lines)


@policy_cmd.command("explain")
@click.option("--from", "src", required=True, metavar="NS/POD|IP", help="Where the connection starts.")
@click.option("--to", "dst", required=True, metavar="NS/POD|IP", help="Where it goes.")
@click.option("--port", type=click.IntRange(0, 65535), required=True, help="Destination port.")
@click.option("--protocol", type=click.Choice(list(L4_PROTOCOLS), case_sensitive=False), default="TCP",
              show_default=True)
@click.option("--family", type=click.Choice(["4", "6"]), default=None,
              help="IPv4 or IPv6 for pods named NS/POD (default: the family of an address given, else the "
                   "source pod's primary address).")
@output_option
@json_shape("{compiled: {from, to, protocol, port, defaultDeny, egress?{isolated, selected_by, allowed, why, "
            "admitted_by: [{policy, origin, peer, ports}], decided_on}, ingress?{...}, allowed, verdict}, "
            "datapath: {src, dst, egress_map, egress, ingress, allowed, reason} or null, "
            "comparison: {egress?{checked, agrees, datapath_allowed}, ingress?{...}, agree}}")
def explain_cmd(src: str, dst: str, port: int, protocol: str, family: str | None, output: str | None) -> None:
    """Why a connection is allowed or denied: the policies that select each side, the rule that admits it
    or the isolation that denies it, and what this node's datapath maps hold for the pair."""
    req: dict[str, Any] = {"from": src, "to": dst, "port": port, "protocol": protocol.upper()}
    if family:
        req["family"] = int(family)
    res = agent_call("policy.explain", req)
    node = agent_call("status")["nodeName"]
    live = None
    if res["from"]["ip"] and res["to"]["ip"] and node in (res.get("egress", {}).get("decided_on"),
                                                           res.get("ingress", {}).get("decided_on")):
        live = dataplane_call("ebpf.policy_check", {"src_ip": res["from"]["ip"], "dst_ip": res["to"]["ip"],
                                                    "port": port, "protocol": protocol.upper()})
    cmp = compare(res, live, node)
    if output_format(output) == "json":
        emit_json({"compiled": res, "datapath": live, "comparison": cmp})
        return
    click.echo(explain_text(res, cmp, live))


EGRESS_COLUMNS = ["NAMESPACE", "NAME", "SRC_IDENTITY", "DST_CIDR", "PROTOCOL", "PORT", "ACTION", "PACKETS", "BYTES"]


def egress_rows(rules: list[dict[str, Any]]) -> list[list[Any]]:
    rows = []
    for r in rules:
        action = r["action"] + (f" {r['snat_ip']}" if r["action"] == "SNAT" and r["snat_ip"] else "")
        if r["ports_from_policy"]:
            action += " (ports per policy)"
        rows.append([r["namespace"] or "-", r["name"] or r["origin"], r["src_identity"] or "*", r["dst_cidr"],
                     r["protocol"], r["port"], action, r["packets"], r["bytes"]])
    return rows


@click.command("egress")
@output_option
@json_shape("{masquerade, snatIP, rules: [{namespace, name, policies, origin, src_identity, src_labels, dst_cidr, "
            "protocol, port, action (ALLOW|DENY|SNAT), ports_from_policy, default, snat_ip, rule, packets, bytes}]}")
def egress_cmd(output: str | None) -> None:
    """Egress rules and counters: what happens to traffic leaving the cluster, per source identity and CIDR."""
    res = dataplane_call("ebpf.egress")
    if output_format(output) == "json":
        emit_json(res)
        return
    click.echo("EGRESS POLICIES")
    click.echo(f"Total Rules: {len(res['rules'])}   Masquerade: {str(res['masquerade']).lower()}"
               + (f" (SNAT to {res['snatIP']})" if res["masquerade"] else "") + "\n")
    click.echo(table(EGRESS_COLUMNS, egress_rows(res["rules"])))


def register(cli: click.Group) -> None:
    from novanet_ebpf_policy.service_cli import service_group

    for cmd in (flows_cmd, drops_cmd, bpf_cmd, policy_cmd, egress_cmd, service_group):
        cli.add_command(cmd)


__all__ = ["compact_line", "flow_row", "parse_since", "register"]
