"""``novanet lab ...``: the lab's commands, added to the ``novanet`` command through
``novanet_register_cli`` (program ``"novanet"``).

Every expected failure is a LabError (or ConfigError) printed as ``Error: ...`` with exit code 1;
tracebacks are for bugs only. JSON outputs are documented in docs/lab.md.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import click
from pyroute2.netlink.exceptions import NetlinkError

from novanet_core.backends import ConfigError
from novanet_core.cli.plugin_api import json_shape
from novanet_core.protocols import IP_PROTOCOLS, L4_PROTOCOLS
from novanet_lab.errors import LabError
from novanet_lab.spec import validate_lab_name

DEFAULT_LAB = "novanet"


def _default_lab() -> str:
    """With no --name and no $NOVANET_LAB: the only lab on this machine, else "novanet"."""
    from novanet_lab.lifecycle import list_labs

    labs = list_labs()
    return labs[0] if len(labs) == 1 else DEFAULT_LAB


def _lab_name(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return validate_lab_name(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


def name_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--name", "-n", "name", envvar="NOVANET_LAB", default=None,
        callback=lambda _c, _p, v: _lab_name(v),
        help=f"Lab name (default: the spec's name:, else ${{NOVANET_LAB}}, else the only lab present, else {DEFAULT_LAB}).",
    )(f)


def output_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True)(f)


def _emit_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=False))


def _progress(quiet: bool) -> Callable[[str], None]:
    def say(msg: str) -> None:
        if not quiet:
            click.echo(msg, err=True)
    return say


class _LabGroup(click.Group):
    """Turns the lab's expected errors into click errors: ``Error: ...`` on stderr, exit 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (LabError, ConfigError) as e:
            raise click.ClickException(str(e)) from None
        except (OSError, NetlinkError) as e:  # the environment (permissions, kernel features), not a bug
            raise click.ClickException(f"{type(e).__name__}: {e}") from None


@click.group(cls=_LabGroup)
def lab() -> None:
    """A local NovaNet cluster: nodes and pods are network namespaces on this machine."""


@lab.command()
@click.option("--spec", "spec_file", required=True, type=click.Path(dir_okay=False), help="Lab spec YAML.")
@name_option
@click.option("--timeout", type=float, default=180.0, show_default=True, help="Seconds for the whole bring-up.")
@click.option("--replace", is_flag=True, help="Remove an existing lab of the same name first.")
@click.option("--keep-on-failure", is_flag=True, help="Keep what was made when up fails (for debugging).")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines on stderr.")
@output_option
@json_shape("the `lab status -o json` object plus upSeconds (docs/lab.md)")
def up(spec_file: str, name: str | None, timeout: float, replace: bool, keep_on_failure: bool, quiet: bool,
       output: str) -> None:
    """Build the lab described by --spec."""
    from novanet_lab.lifecycle import up as lab_up
    from novanet_lab.spec import load_spec
    from novanet_lab.status import lab_status, status_table

    spec = load_spec(spec_file)
    if name is not None:
        spec = spec.model_copy(update={"name": name})
    t0 = time.monotonic()
    lab_up(spec, os.path.abspath(spec_file), timeout=timeout, replace=replace, keep_on_failure=keep_on_failure,
           progress=_progress(quiet))
    elapsed = time.monotonic() - t0
    st = lab_status(spec.name)
    if output == "json":
        _emit_json({**st, "upSeconds": round(elapsed, 2)})
    else:
        click.echo(status_table(st))


@lab.command()
@name_option
@click.option("--spec", "spec_file", type=click.Path(dir_okay=False), help="Take the lab name from this spec.")
@click.option("-q", "--quiet", is_flag=True)
@output_option
@json_shape("{name, cniDel, cniDelErrors, processes, killed?, netns, frrLinks, bpfPins, dirs} (docs/lab.md)")
def down(name: str | None, spec_file: str | None, quiet: bool, output: str) -> None:
    """Remove everything the lab made (also after a crash)."""
    from novanet_lab.lifecycle import down as lab_down

    if name is None and spec_file is not None:
        from novanet_lab.spec import load_spec

        name = load_spec(spec_file).name
    report = lab_down(name or _default_lab(), progress=_progress(quiet))
    if output == "json":
        _emit_json(report)
    elif not quiet and not (report["netns"] or report["processes"] or report["dirs"]):
        click.echo(f"lab {report['name']}: nothing to remove", err=True)
    for e in report["cniDelErrors"]:
        click.echo(f"warning: {e}", err=True)


@lab.command()
@name_option
@output_option
@json_shape("{name, phase, healthy, specFile, createdAt, cluster, underlay, outside, manifestDir, manifestVersion, nodes, namespaces, pods, networkPolicies} (docs/lab.md)")
def status(name: str | None, output: str) -> None:
    """Nodes, agents and pods of the lab, checked live."""
    from novanet_lab.status import lab_status, status_table

    st = lab_status(name or _default_lab())
    if output == "json":
        _emit_json(st)
    else:
        click.echo(status_table(st))
    if not st["healthy"]:
        sys.exit(3)


@lab.command("list")
def list_() -> None:
    """Labs present on this machine (also half-removed ones)."""
    from novanet_lab.lifecycle import list_labs

    for n in list_labs():
        click.echo(n)


def _exec_where(st: Any, lab_name: str, node: str | None, outside: bool, target: str | None,
                command: tuple[str, ...]) -> tuple[str, str | None, tuple[str, ...]]:
    """``lab exec``'s netns, the node whose cgroup the command joins, and the command (TARGET is
    its first word when --node or --outside names the place)."""
    if outside:
        if target is not None:
            command = (target, *command)
        if st.outside is None:
            raise LabError(f"lab {lab_name} has no outside host (outside.enabled: false)")
        return st.outside.netns, None, command  # the outside host is no node: no node cgroup
    if node is not None:
        if target is not None:
            command = (target, *command)
        if node not in st.nodes:
            raise LabError(f"--node {node}: not a node of lab {lab_name} ({', '.join(st.nodes)})")
        return st.nodes[node].netns, node, command
    if target is None or "/" not in target:
        raise LabError("give the pod as NS/POD (or --node NODE), then -- and the command")
    if target not in st.pods:
        raise LabError(f"pod {target} is not in lab {lab_name} (pods: {', '.join(st.pods) or 'none'})")
    return st.pods[target].netns, st.pods[target].node, command


@lab.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@name_option
@click.option("--node", help="Run in this node's netns instead of a pod's.")
@click.option("--outside", is_flag=True, help="Run in the outside host's netns (outside.address).")
@click.argument("target", required=False)
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def exec(name: str | None, node: str | None, outside: bool, target: str | None, command: tuple[str, ...]) -> None:
    """Run COMMAND inside pod TARGET (NS/POD), --node NODE or --outside: novanet lab exec x/a -- ping -c1 10.42.0.5"""
    from novanet_lab import cgroups, netns
    from novanet_lab import state as lstate
    from novanet_lab.paths import NETNS_DIR, LabPaths

    lab_name = name or _default_lab()
    paths = LabPaths(lab_name)
    st = lstate.load(paths)
    if st is None:
        raise LabError(f"lab {lab_name} is not up (no {paths.state_file})")
    ns, cg_node, command = _exec_where(st, lab_name, node, outside, target, command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise LabError("no command given (… -- CMD ARGS)")
    if not netns.exists(ns):
        raise LabError(f"netns {ns} does not exist (the lab is broken; `novanet lab down` and up again)")
    from novanet_lab.dns import resolv_file

    resolv = resolv_file(paths, st.pods[target]) if node is None and not outside else None
    if resolv is not None and resolv.exists() and os.path.exists("/etc/resolv.conf"):
        # The pod's resolv.conf (cluster DNS), as the runtime would mount it: in a private mount
        # namespace, so nothing outside this command sees it.
        command = ("unshare", "--mount", "--propagation", "private", "sh", "-c",
                   'mount --bind "$0" /etc/resolv.conf && exec "$@"', str(resolv), *command)
    mount: list[str] = []
    if node is not None:
        from novanet_lab.daemonset import node as ds_node

        if ds_node.is_daemonset(paths, node):  # the node's own view: its /opt/cni/bin, /run/netns, ...
            mount = [f"--mount={ds_node.cni_context(paths, node)[0]}"]
    sys.stdout.flush()
    try:
        node_cg = cgroups.node_dir(lab_name, cg_node) if cg_node else None
        if node_cg is not None and node_cg.exists():
            cgroups.join(node_cg)  # a process of that node: its socket-level Service translation applies
        os.execvp("nsenter", ["nsenter", *mount, f"--net={NETNS_DIR / ns}", *command])
    except OSError as e:
        raise LabError(f"cannot run nsenter: {e}") from None


@lab.command()
@name_option
@click.option("-f", "--filename", "files", multiple=True, required=True, help="YAML file (- for stdin); repeatable.")
@click.option("--timeout", type=float, default=60.0, show_default=True, help="Seconds to wait for every agent.")
@click.option("-q", "--quiet", is_flag=True)
def apply(name: str | None, files: tuple[str, ...], timeout: float, quiet: bool) -> None:
    """Create or update Namespaces, Pods, NetworkPolicies, Services and EndpointSlices; returns once every agent has them."""
    from novanet_lab.changes import apply as lab_apply
    from novanet_lab.resources import load_resources

    resources = [r for f in files for r in load_resources(f)]
    for line in lab_apply(name or _default_lab(), resources, timeout=timeout, progress=_progress(quiet)):
        click.echo(line)


@lab.command()
@name_option
@click.option("-f", "--filename", "files", multiple=True, required=True, help="YAML file (- for stdin); repeatable.")
@click.option("--timeout", type=float, default=60.0, show_default=True)
@click.option("--ignore-not-found", is_flag=True)
@click.option("-q", "--quiet", is_flag=True)
def delete(name: str | None, files: tuple[str, ...], timeout: float, ignore_not_found: bool, quiet: bool) -> None:
    """Delete the objects named in the files (pods get CNI DEL)."""
    from novanet_lab.changes import NotFound
    from novanet_lab.changes import delete as lab_delete
    from novanet_lab.resources import load_resources

    resources = [r for f in files for r in load_resources(f)]
    try:
        lines, _ = lab_delete(name or _default_lab(), resources, timeout=timeout, ignore_not_found=ignore_not_found,
                              progress=_progress(quiet))
    except NotFound as e:
        for line in e.lines:
            click.echo(line)
        raise
    for line in lines:
        click.echo(line)


@lab.command()
@name_option
@click.option("--from", "sources", multiple=True, metavar="NS/POD|NS", help="Source pods (default: all).")
@click.option("--to", "targets", multiple=True, metavar="NS/POD|NS",
              help="Target pods (default: all, unless --to-service is given).")
@click.option("--to-service", "services", multiple=True, metavar="NS/NAME",
              help="Probe this Service's ClusterIP on its ports (results: \"to\": \"svc:NS/NAME\"); a reply from "
                   "any of its endpoint pods counts.")
@click.option("--node-port", metavar="NODE", help="With --to-service: probe NODE's IP on the nodePorts instead.")
@click.option("--from-node", "from_nodes", multiple=True, metavar="NODE",
              help="Also probe from this node's own netns (a host-network process; \"from\": \"node:NODE\").")
@click.option("--from-underlay", is_flag=True,
              help="Also probe from the underlay, outside every node (\"from\": \"underlay\").")
@click.option("--port", "ports", multiple=True, type=int, help="Ports (default: every port a target declares).")
@click.option("--protocol", "protocols", multiple=True, type=click.Choice(L4_PROTOCOLS, case_sensitive=False),
              help="TCP, UDP, SCTP (default: TCP and UDP; SCTP = crafted INIT chunks, see novanet_lab.sctp).")
@click.option("--timeout", type=float, default=None, help="Seconds after which a probe counts as blocked (0.3).")
@click.option("--confirm-timeout", type=float, default=None,
              help="TCP/UDP probes that timed out are tried once more with this timeout, and missing SCTP INITs "
                   "waited for as long (0.6; 0 = no second try).")
@click.option("--family", type=click.Choice(("4", "6", "all")), default="all", show_default=True,
              help="IP family of the target addresses: 4, 6, or every family the lab's pods have (a dual-stack "
                   "lab: each family in turn, IPv4 first; results carry \"family\").")
@output_option
@json_shape("{results: [{from, to, port, protocol, reachable, backend?, family, ...}], seconds} (docs/lab.md)")
def probe(name: str | None, sources: tuple[str, ...], targets: tuple[str, ...], services: tuple[str, ...],
          node_port: str | None, from_nodes: tuple[str, ...], from_underlay: bool, ports: tuple[int, ...],
          protocols: tuple[str, ...], timeout: float | None, confirm_timeout: float | None, family: str,
          output: str) -> None:
    """Probe pod-to-pod (and pod-to-Service) reachability; prints e2e-style truth tables or JSON."""
    from novanet_lab.probe import CONFIRM_TIMEOUT, DEFAULT_TIMEOUT
    from novanet_lab.reach import probe as lab_probe
    from novanet_lab.table import results_tables

    if timeout is not None and not 0 < timeout <= 60:
        raise LabError(f"--timeout {timeout}: must be in (0, 60] seconds")
    if confirm_timeout is not None and not 0 <= confirm_timeout <= 60:
        raise LabError(f"--confirm-timeout {confirm_timeout}: must be in [0, 60] seconds")
    t0 = time.monotonic()
    results = lab_probe(name or _default_lab(), sources, targets, ports, [p.upper() for p in protocols],
                        timeout or DEFAULT_TIMEOUT, CONFIRM_TIMEOUT if confirm_timeout is None else confirm_timeout,
                        services, node_port, from_nodes, from_underlay, family)
    elapsed = time.monotonic() - t0
    if output == "json":
        _emit_json({"results": [r.to_json() for r in results], "seconds": round(elapsed, 3)})
    else:
        click.echo(results_tables(results))
        if any(r.protocol == "SCTP" for r in results):
            from novanet_lab.sctp import NOTE

            click.echo(NOTE)
        click.echo(f"\n{len(results)} probes in {elapsed:.2f} s", err=True)


@lab.command()
@name_option
@click.option("--node", "nodes", multiple=True, help="Only these nodes (default: all).")
@click.option("--pod", default=None, metavar="NS/POD", help="From or to this pod.")
@click.option("--from-pod", default=None, metavar="NS/POD")
@click.option("--to-pod", default=None, metavar="NS/POD")
@click.option("--namespace", default=None, metavar="NS", help="From or to a pod of this namespace.")
@click.option("--protocol", type=click.Choice(list(IP_PROTOCOLS), case_sensitive=False), default=None)
@click.option("--port", type=click.IntRange(0, 65535), default=None, help="Source or destination port.")
@click.option("--verdict", type=click.Choice(["ALLOW", "DENY", "FORWARDED", "DROPPED"], case_sensitive=False),
              default=None)
@click.option("--since", default=None, metavar="DURATION|TIME", help="Only events after this (30s, 5m, ISO time).")
@click.option("--last", type=click.IntRange(0), default=100, show_default=True, help="How many recent events.")
@click.option("-f", "--follow", is_flag=True, help="Keep streaming (merged in time order, 0.5 s reorder window).")
@click.option("-o", "--output", type=click.Choice(["compact", "json"]), default="compact", show_default=True)
@json_shape("one flow object per line, the shape of `novanetctl flows -o json`, every node's merged in time order")
def flows(name: str | None, nodes: tuple[str, ...], pod: str | None, from_pod: str | None, to_pod: str | None,
          namespace: str | None, protocol: str | None, port: int | None, verdict: str | None, since: str | None,
          last: int, follow: bool, output: str) -> None:
    """Flow events of every node merged in time order (the cluster-wide view, like Hubble Relay)."""
    from novanet_core.cli.flowfmt import compact_line, parse_since
    from novanet_lab import state as lstate
    from novanet_lab.flows import Merge
    from novanet_lab.paths import LabPaths

    lab_name = name or _default_lab()
    paths = LabPaths(lab_name)
    st = lstate.load(paths)
    if st is None:
        raise LabError(f"lab {lab_name} is not up (no {paths.state_file})")
    bad = [n for n in nodes if n not in st.nodes]
    if bad:
        raise LabError(f"--node {bad[0]}: not a node of lab {lab_name} ({', '.join(st.nodes)})")
    flt = {k: v for k, v in (("pod", pod), ("from_pod", from_pod), ("to_pod", to_pod), ("namespace", namespace),
                             ("protocol", protocol and protocol.upper()), ("port", port),
                             ("verdict", verdict and verdict.upper())) if v is not None}
    if since:
        flt["since"] = parse_since(since)
    m = Merge(paths, list(nodes) or list(st.nodes), {"filter": flt} if flt else {})
    events = m.follow(last) if follow else iter(m.recent(last))
    try:
        for e in events:
            click.echo(json.dumps(e, separators=(",", ":")) if output == "json" else compact_line(e))
    except KeyboardInterrupt:
        pass
    for node, err in m.errors.items():
        click.echo(f"warning: node {node}: {err}", err=True)
    if m.errors and len(m.errors) == len(m.nodes):
        sys.exit(3)


@lab.command()
@name_option
@click.option("--node", "nodes", multiple=True, help="Node(s) to restart (default: all).")
@click.option("--daemon", "daemons", multiple=True, type=click.Choice(["agent", "dataplane"]),
              help="Which daemon(s) (default: both, dataplane first).")
@click.option("--kill", "hard", is_flag=True, help="SIGKILL instead of SIGTERM (a crash rather than a restart).")
@output_option
@json_shape("[{node, daemon, oldPid, newPid, signal, seconds}]")
def restart(name: str | None, nodes: tuple[str, ...], daemons: tuple[str, ...], hard: bool, output: str) -> None:
    """Restart node daemons; pods keep their connectivity (pinned datapath) and the new daemons reconcile."""
    from novanet_lab.restart import restart as lab_restart

    report = lab_restart(name or _default_lab(), list(nodes) or None, list(daemons) or ["dataplane", "agent"], hard)
    if output == "json":
        _emit_json(report)
    else:
        for r in report:
            click.echo(f"{r['node']}: {r['daemon']} pid {r['oldPid']} -> {r['newPid']} ({r['signal']}, {r['seconds']} s)")
