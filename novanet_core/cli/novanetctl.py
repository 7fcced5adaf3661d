"""``novanetctl``: inspect a NovaNet node through its agent's local API.

Every command takes ``-o table|json``; JSON output is a public contract (docs/cli.md). Plugins add
their own commands (``flows``, ``drops``, ``routing ...``) through ``novanet_register_cli``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from novanet_core import __version__
from novanet_core.api.client import ApiClient
from novanet_core.cli import plugin_api, tree
from novanet_core.cli.output import emit_json, table
from novanet_core.cli.plugin_api import json_shape

DEFAULT_AGENT_SOCKET = "/run/novanet/novanet.sock"


class CtlContext:
    def __init__(self, agent_socket: str, dataplane_socket: str | None, output: str):
        self.agent_socket = agent_socket
        self._dataplane_socket = dataplane_socket
        self.output = output

    def agent(self) -> ApiClient:
        return ApiClient(self.agent_socket, timeout=10)

    def dataplane(self) -> ApiClient:
        path = self._dataplane_socket
        if path is None:
            with self.agent() as a:
                path = a.call("config.get")["sockets"]["dataplane"]
        return ApiClient(path, timeout=None)

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        with self.agent() as a:
            return a.call(method, params)


# (node, lab) -> the node's agent socket, or None when the resolver does not know the node.
NodeResolver = Callable[[str, str | None], str | None]


class CtlGroup(click.Group):
    """The ``novanetctl`` group. ``--node NAME [--lab LAB]`` is answered by a plugin that knows where
    such nodes keep their agent socket: the lab plugin registers one from ``novanet_register_cli``
    with ``cli.add_node_resolver(name, fn)``. A resolver may raise click.UsageError with a better
    message (an ambiguous name, say)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.node_resolvers: dict[str, NodeResolver] = {}

    def add_node_resolver(self, name: str, resolve: NodeResolver) -> None:
        self.node_resolvers[name] = resolve

    def node_socket(self, node: str, lab: str | None) -> str:
        for resolve in self.node_resolvers.values():
            path = resolve(node, lab)
            if path:
                return path
        if not self.node_resolvers:
            raise click.UsageError(f"--node {node}: no installed plugin resolves node names "
                                   "(novanet-lab does, for lab nodes)")
        raise click.UsageError(f"--node {node}: no such node")


def run_call(ctx: click.Context, method: str, params: dict[str, Any] | None = None) -> Any:
    """Kept for callers written before :mod:`novanet_core.cli.plugin_api`; use ``agent_call``."""
    return plugin_api.agent_call(method, params, ctx)


output_option = plugin_api.output_option


def _out(ctx: click.Context, local: str | None) -> str:
    return local or ctx.obj.output


@click.group(cls=CtlGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--agent-socket", envvar="NOVANET_AGENT_SOCKET", default=None, help=f"agent socket (default {DEFAULT_AGENT_SOCKET})")
@click.option("--dataplane-socket", envvar="NOVANET_DATAPLANE_SOCKET", default=None, help="dataplane socket (default: ask the agent)")
@click.option("--node", default=None, help="talk to this lab node's agent")
@click.option("--lab", default=None, help="lab name, with --node when several labs run")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
def cli(ctx: click.Context, agent_socket: str | None, dataplane_socket: str | None, node: str | None, lab: str | None, output: str) -> None:
    """Inspect a NovaNet node."""
    if node:
        agent_socket = cli.node_socket(node, lab)
    ctx.obj = CtlContext(agent_socket or DEFAULT_AGENT_SOCKET, dataplane_socket, output)


@cli.command()
def version() -> None:
    """Print the novanetctl version."""
    click.echo(f"novanetctl {__version__}")


def _attachments(dp: dict[str, Any]) -> list[dict[str, Any]]:
    return list(dp.get("links") or dp.get("programs") or [])


def status_text(st: dict[str, Any], verbose: bool = False) -> str:
    """The guide's ``novanetctl status`` block (key: value lines), from the agent's ``status``."""
    dp = st.get("dataplane", {})
    links = _attachments(dp)
    routing = st.get("routing") or {}
    routing_connected = routing.get("connected") if st["routingMode"] == "native" else None
    attach = f" ({dp['attachMode']})" if dp.get("attachMode") else ""
    lines = [
        "NovaNet Agent Status", "====================",
        f"Node:              {st['nodeName']}",
        f"Routing Mode:      {st['routingMode']}",
        f"Tunnel Protocol:   {st['tunnelProtocol'] or '-'}",
        f"Node IP:           {st['nodeIP']}",
        f"Pod CIDR:          {st['podCIDR']}",
        f"Cluster CIDR:      {st['clusterCIDR']}",
        f"MTU:               {st['mtu']}",
        f"Default Deny:      {str(st['defaultDeny']).lower()}",
        f"Masquerade:        {str(st.get('masquerade', True)).lower()}",
        "",
        f"Endpoints:         {st['endpoints']}",
        f"Policies:          {st['policies']}",
        f"Tunnels:           {st['tunnels']}",
        f"Identities:        {st['identities']}",
        "",
        f"Dataplane:         {'connected' if dp.get('connected') else 'disconnected'}",
        f"Datapath:          {st['datapath']}" + (f" (attach: {dp['attachMode']})" if dp.get("attachMode") else ""),
        f"Attached Programs: {len(links)}{attach}",
        "Routing Connected: " + ("-" if routing_connected is None else str(bool(routing_connected)).lower()),
        f"Ready:             {str(st['ready']).lower()}",
    ]
    pm = dp.get("policy_maps") or {}
    if pm.get("failedClosed"):  # only under pressure: the block is otherwise the guide's
        lines.insert(lines.index("") + 1, f"Policy Maps:       FULL: {len(pm['failedClosed'])} endpoint(s) failed "
                     f"closed (POLICY_MAP_FULL): {', '.join(pm['failedClosed'][:5])}")
    if verbose and links:
        lines += ["", table(["INTERFACE", "DIRECTION", "PROG_ID", "LINK_ID"],
                            [(x.get("interface"), x.get("direction"), x.get("prog_id"), x.get("link_id"))
                             for x in links])]
    return "\n".join(lines)


@cli.command()
@click.option("-v", "--verbose", is_flag=True, help="Also list every attached program (interface, direction, ids).")
@output_option
@json_shape("the agent's status object: {version, ready, nodeName, nodeIP, podCIDR, clusterCIDR, routingMode, "
            "tunnelProtocol, datapath, ipam, mtu, gateway, defaultDeny, masquerade, stateVersion, endpoints, "
            "identities, policies, rejectedPolicies, tunnels, remoteEndpoints, nodes, routing?{connected, ...}, "
            "dataplane{connected, datapath, generation, pid, attachMode, programs, links, drop_counters, ...}, "
            "uptimeSeconds}")
@click.pass_context
def status(ctx: click.Context, verbose: bool, output: str | None) -> None:
    """Node status: modes, addresses, counts, dataplane and routing connection, attached programs."""
    st = run_call(ctx, "status")
    if _out(ctx, output) == "json":
        return emit_json(st)
    click.echo(status_text(st, verbose))


@cli.command()
@output_option
@json_shape("[{ip, identity, host_ifname, host_ifindex, mac, node_ip, local, namespace, pod, containerID, inAgent, inDatapath?}]")
@click.pass_context
def endpoints(ctx: click.Context, output: str | None) -> None:
    """Endpoints as the live datapath holds them."""
    eps = run_call(ctx, "endpoints.list")
    if _out(ctx, output) == "json":
        return emit_json(eps)
    rows = [(e["ip"], e.get("namespace"), e.get("pod"), e.get("identity"), e.get("host_ifname"), e.get("host_ifindex"),
             e.get("mac"), e.get("node_ip"), "local" if e.get("local", True) else "remote") for e in eps]
    click.echo(table(["IP", "NAMESPACE", "POD", "IDENTITY", "IFNAME", "IFINDEX", "MAC", "NODE_IP", "SCOPE"], rows))


@cli.command()
@output_option
@json_shape("[{id, namespace, labels, podCount, remotePodCount}]")
@click.pass_context
def identity(ctx: click.Context, output: str | None) -> None:
    """Identity to label-set mappings."""
    ids = run_call(ctx, "identity.list")
    if _out(ctx, output) == "json":
        return emit_json(ids)
    click.echo("IDENTITY MAPPINGS")
    click.echo(f"Total Identities: {len(ids)}\n")
    rows = [(i["id"], i["namespace"], i["podCount"],
             ", ".join(f"{k}={v}" for k, v in sorted(i["labels"].items())) or "<none>") for i in ids]
    click.echo(table(["ID", "NAMESPACE", "POD_COUNT", "LABELS"], rows))


@cli.command()
@output_option
@json_shape("[{name, module, version, distribution, builtin, hooks, backends, active, error?}]")
@click.pass_context
def plugins(ctx: click.Context, output: str | None) -> None:
    """Discovered plugins, their versions, hooks, and whether they are active."""
    pl = run_call(ctx, "plugins.list")
    if _out(ctx, output) == "json":
        return emit_json(pl)
    rows = [(p["name"], p["version"], "yes" if p["active"] else "no", ",".join(p["backends"]) or "-",
             ",".join(h.removeprefix("novanet_") for h in p["hooks"])) for p in pl]
    click.echo(table(["NAME", "VERSION", "ACTIVE", "BACKENDS", "HOOKS"], rows))


@cli.command()
@output_option
@json_shape("{status: {pool, allocated, capacity, ready, ...}, allocations: [{container_id, ifname, address, prefix_len, gateway}]}")
@click.pass_context
def ipam(ctx: click.Context, output: str | None) -> None:
    """IP allocations of this node's pool."""
    allocs = run_call(ctx, "ipam.list")
    st = run_call(ctx, "ipam.status")
    if _out(ctx, output) == "json":
        return emit_json({"status": st, "allocations": allocs})
    click.echo(f"Pool: {st.get('pool')}  allocated {st.get('allocated')}/{st.get('capacity')}")
    click.echo(table(["IP", "CONTAINER_ID", "IFNAME"], [(a["address"], a["container_id"], a["ifname"]) for a in allocs]))


@cli.command()
@output_option
@json_shape("[{node, nodeIP, podCIDR, interface, ifindex, protocol, ...}]")
@click.pass_context
def tunnels(ctx: click.Context, output: str | None) -> None:
    """Active tunnels (overlay mode)."""
    st = run_call(ctx, "status")
    tl = run_call(ctx, "tunnels.list")
    if _out(ctx, output) == "json":
        return emit_json(tl)
    click.echo("TUNNEL STATE")
    click.echo(f"Routing Mode: {st['routingMode']}\nTunnel Protocol: {st['tunnelProtocol'] or '-'}\nActive Tunnels: {len(tl)}\n")
    if not tl:
        click.echo("No active tunnels.")
        return
    rows = [(t["node"], t["nodeIP"], t["podCIDR"], t["interface"], t["ifindex"], t["protocol"]) for t in tl]
    click.echo(table(["NODE", "NODE_IP", "POD_CIDR", "INTERFACE", "IFINDEX", "PROTOCOL"], rows))


@cli.command()
@output_option
@json_shape("{removed_records, removed_veths, released_ips, datapath_removed, datapath_added}")
@click.pass_context
def reconcile(ctx: click.Context, output: str | None) -> None:
    """Reconcile live state with desired state now and print what changed."""
    rep = run_call(ctx, "reconcile")
    if _out(ctx, output) == "json":
        return emit_json(rep)
    for k, v in rep.items():
        click.echo(f"{k}: {len(v)} {' '.join(v)}")


def build_cli() -> click.Group:
    from novanet_core.cli.debug_bundle import debug_bundle_cmd
    from novanet_core.cli.summary import metrics_cmd
    from novanet_core.config.models import NovaNetConfig
    from novanet_core.plugins.manager import PluginHost

    for cmd in (debug_bundle_cmd, metrics_cmd):
        cli.add_command(cmd)
    # Plugins add their commands whatever the node's config: the CLI must be able to inspect
    # any backend that is installed.
    try:
        host = PluginHost(NovaNetConfig(), "cli")
        host.pm.hook.novanet_register_cli.call_historic(kwargs={"cli": cli, "program": "novanetctl"})
    except Exception as e:  # a broken plugin must not take the core commands down with it
        click.echo(f"novanetctl: warning: plugin commands unavailable: {e}", err=True)
    return tree.finish(cli, "novanetctl", __version__)


def main() -> None:
    build_cli()(prog_name="novanetctl")


if __name__ == "__main__":
    main()
