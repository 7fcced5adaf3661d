"""``novanetctl debug-bundle``: the guide's 11 items, both daemons' logs, policy, egress, BPF stats.

Plugins go first (``novanet_debug_bundle``): the Kubernetes state source provides the ``kubectl``
items when it is the configured source; then every guide item nobody provided is filled with the
node's own equivalent, taken by the daemons where they run (:mod:`novanet_core.debug_api`): the
daemons for "NovaNet pods", their in-memory log lines for the logs, the agent's state for nodes,
NetworkPolicies and events. One item failing never stops the others (``index.json`` says which).
"""

from __future__ import annotations

import json
from typing import Any

import click
import yaml

from novanet_core.api.client import Unreachable
from novanet_core.api.protocol import ApiError
from novanet_core.bundle import GUIDE_ITEMS, DebugBundle, item_name
from novanet_core.cli.output import table


class _Daemons:
    """Calls for the bundle: an unreachable daemon or an error answer raises (the item records it)."""

    def __init__(self, obj: Any):
        self.obj = obj
        self._cache: dict[tuple[str, str], Any] = {}

    def agent(self, method: str, params: dict[str, Any] | None = None) -> Any:
        key = ("agent", method + json.dumps(params, sort_keys=True))
        if key not in self._cache:
            with self.obj.agent() as c:
                self._cache[key] = c.call(method, params)
        return self._cache[key]

    def dataplane(self, method: str, params: dict[str, Any] | None = None) -> Any:
        with self.obj.dataplane() as c:
            return c.call(method, params)


def _cmd_text(r: dict[str, Any]) -> str:
    return f"$ {' '.join(r['argv'])}\n(exit {r['exit']})\n{r['stdout']}{r['stderr']}"


def _daemons_text(st: dict[str, Any]) -> str:
    dp = st.get("dataplane", {})
    rows = [("novanet-agent", "ready" if st.get("ready") else "not ready", st.get("version"), st.get("nodeName"),
             f"{st.get('uptimeSeconds')} s"),
            ("novanet-dataplane", "connected" if dp.get("connected") else "disconnected", st.get("version"),
             st.get("nodeName"), f"pid {dp.get('pid', '-')}")]
    return ("The NovaNet daemons of this node (no Kubernetes source configured: the node's equivalent of "
            "kubectl get pods -n nova-system):\n\n" + table(["NAME", "STATE", "VERSION", "NODE", "UPTIME/PID"], rows)
            + "\n")


def _nodes_text(state: dict[str, Any]) -> str:
    return table(["NAME", "INTERNAL-IP", "POD-CIDR"], [(n["name"], n["internalIP"], n["podCIDR"])
                                                       for n in state["nodes"]]) + "\n"


def _policies_yaml(state: dict[str, Any]) -> str:
    items = [{"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
              "metadata": {"name": p["name"], "namespace": p["namespace"]}, "spec": p["spec"]}
             for p in state["networkPolicies"]]
    return yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": items}, sort_keys=False)


def _events_text(d: _Daemons) -> str:
    """The node's events: warnings and errors of both daemons, and the recent policy programming."""
    out = ["Warnings and errors of the NovaNet daemons on this node (no Kubernetes source configured):", ""]
    for who, fetch in (("agent", d.agent), ("dataplane", d.dataplane)):
        try:
            lines = fetch("logs.tail", {"lines": 2000})["lines"]
        except (Unreachable, ApiError) as e:
            out.append(f"{who}: unavailable ({e})")
            continue
        out += [f"{who}: {ln}" for ln in lines if " WARNING " in ln or " ERROR " in ln or " CRITICAL " in ln]
    try:
        pol = d.agent("policy.status")
        out += ["", "Recent policy programming:"] + [
            f"  {r['at']:.3f} {r['what']}: {r['endpoints']} endpoints, {r['written']} entries, {r['seconds'] * 1e3:.2f} ms"
            for r in pol.get("recent", [])[-50:]]
    except (Unreachable, ApiError) as e:
        out.append(f"policy status unavailable ({e})")
    return "\n".join(out) + "\n"


def _logs(fetch: Any) -> str:
    return "\n".join(fetch("logs.tail", {"lines": 500})["lines"]) + "\n"


def collect(obj: Any) -> DebugBundle:
    from novanet_core.config.models import NovaNetConfig
    from novanet_core.plugins.manager import PluginHost

    b = DebugBundle()
    d = _Daemons(obj)
    node = "node (agent)"
    ok_cfg = b.add_item("config.json", lambda: d.agent("config.get"))
    # 1. plugins: each on its own, so one that raises costs only its own files
    if ok_cfg:
        try:
            cfg = NovaNetConfig.model_validate(d.agent("config.get"))
            host = PluginHost(cfg, "cli")
            for impl in host.pm.hook.novanet_debug_bundle.get_hookimpls():
                b.add_item(f"plugin-{impl.plugin_name}.txt",
                           lambda impl=impl: impl.function(bundle=b, config=cfg) or f"{impl.plugin_name}: ok\n",
                           source=f"plugin {impl.plugin_name}")
        except Exception as e:  # no plugins: the core items still come
            b.add_text("plugins-error.txt", f"plugin diagnostics unavailable: {type(e).__name__}: {e}\n")
    # 2. the guide's items the plugins did not provide, from the node itself
    status = lambda: d.agent("status")  # noqa: E731
    node_view = lambda: d.agent("debug.node")  # noqa: E731
    fill = {
        1: ("txt", lambda: _daemons_text(status())),
        2: ("log", lambda: _logs(d.agent)),
        3: ("log", lambda: _logs(d.dataplane)),
        4: ("txt", lambda: _status_text(status())),
        5: ("txt", lambda: _nodes_text(d.agent("state.dump"))),
        6: ("txt", lambda: _cmd_text(node_view()["kernel"]) + _cmd_text(node_view()["btf"])),
        7: ("txt", lambda: _cmd_text(node_view()["bpffs"])),
        8: ("txt", lambda: _cmd_text(node_view()["links"]) + _cmd_text(node_view()["routes"])),
        9: ("txt", lambda: _cmd_text(node_view()["geneve"]) + _cmd_text(node_view()["vxlan"])),
        10: ("yaml", lambda: _policies_yaml(d.agent("state.dump"))),
        11: ("txt", lambda: _events_text(d)),
    }
    for n, (ext, produce) in fill.items():
        if b.has_item(n):
            continue
        tried = next((x for x in b.index if x.get("item") == n and not x.get("ok")), None)
        note = f"({tried['source']} failed: {tried['error']}; the node's equivalent follows)\n\n" if tried else ""
        if tried and tried["file"] != item_name(n, ext):
            b.files.pop(tried["file"], None)
            b.files[item_name(n, ext) + ".failed"] = f"{tried['source']}: {tried['error']}\n".encode()
        b.add_item(item_name(n, ext), lambda produce=produce, note=note: note + produce(), n, node)
    # 3. beyond the guide's list
    b.add_item("status.json", status)
    for name, method in (("endpoints.json", "endpoints.list"), ("identities.json", "identity.list"),
                         ("plugins.json", "plugins.list"), ("ipam.json", "ipam.list"), ("policy.json", "policy.list"),
                         ("policy-status.json", "policy.status"), ("metrics-summary.json", "metrics.summary"),
                         ("cluster-state.json", "state.dump"), ("node-commands.json", "debug.node")):
        b.add_item(name, lambda method=method: d.agent(method))
    b.add_item("datapath-stats.json", lambda: d.dataplane("dp.stats"))
    b.add_item("datapath-policy.json", lambda: d.dataplane("dp.policy.list"))
    b.add_item("datapath-flows.json", lambda: _stream(obj, "dp.flows", {"limit": 2000}))
    return b


def _stream(obj: Any, method: str, params: dict[str, Any]) -> list[Any]:
    with obj.dataplane() as c:
        return list(c.stream(method, params))


def _status_text(st: dict[str, Any]) -> str:
    from novanet_core.cli.novanetctl import status_text

    return status_text(st, verbose=True) + "\n"


@click.command("debug-bundle")
@click.option("--out", "out_path", default="novanet-debug.tar.gz", show_default=True, help="Tarball to write.")
@click.pass_context
def debug_bundle_cmd(ctx: click.Context, out_path: str) -> None:
    """Collect the guide's debug bundle (its 11 items, both daemons' logs, policy, egress, BPF stats) into a
    tarball; an item that cannot be collected records why, the rest are written anyway."""
    b = collect(ctx.find_root().obj)
    b.write_tar(out_path)
    failed = [x["file"] for x in b.index if not x["ok"]]
    have = sum(1 for n in GUIDE_ITEMS if b.has_item(n))
    click.echo(f"wrote {out_path} ({len(b.files) + 1} files; {have}/{len(GUIDE_ITEMS)} guide items"
               + (f"; could not collect: {', '.join(failed)}" if failed else "") + ")")
