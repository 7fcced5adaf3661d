"""The Kubernetes items of the guide's debug bundle, read from the API server this node's agent uses
(``stateSource.type: kubernetes``): what ``kubectl get pods/nodes/networkpolicy/events`` and
``kubectl logs`` would show. An item the API server cannot give records its error; the core then
fills it with the node's own equivalent (the daemons' recent log lines, the agent's state).
"""

from __future__ import annotations

from typing import Any

import yaml

from novanet_core.bundle import DebugBundle, item_name
from novanet_core.config.models import NovaNetConfig

NAMESPACE = "nova-system"  # where the chart runs NovaNet (the guide's namespace)
CONTAINERS = {2: "novanet-agent", 3: "novanet-dataplane"}


def _apis(config: NovaNetConfig) -> tuple[Any, Any]:
    from novanet_kube_source.source import _load_client

    s = config.pluginSettings.get("kubernetes-source", {})
    core, net, _ = _load_client(config.stateSource.kubeconfig, s.get("apiServer"), s.get("caFile"),
                                bool(s.get("insecureSkipTLSVerify", False)))
    return core, net


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    from novanet_core.cli.output import table

    return table(headers, rows) + "\n"


def _novanet_pods(core: Any) -> list[Any]:
    # All namespaces then filtered: one list call that any API server (and its stand-in) serves.
    return [p for p in core.list_pod_for_all_namespaces().items if p.metadata.namespace == NAMESPACE]


def pods_text(core: Any) -> str:
    rows = []
    for p in _novanet_pods(core):
        cs = p.status.container_statuses or []
        ready = f"{sum(1 for c in cs if c.ready)}/{len(p.spec.containers or cs)}"
        rows.append([p.metadata.name, ready, p.status.phase, sum(c.restart_count or 0 for c in cs),
                     p.status.pod_ip, p.spec.node_name])
    return _table(["NAME", "READY", "STATUS", "RESTARTS", "IP", "NODE"], rows)


def nodes_text(core: Any) -> str:
    rows = []
    for n in core.list_node().items:
        addrs = {a.type: a.address for a in (n.status.addresses or [])}
        ready = next((c.status for c in (n.status.conditions or []) if c.type == "Ready"), "Unknown")
        info = n.status.node_info
        rows.append([n.metadata.name, "Ready" if ready == "True" else "NotReady", addrs.get("InternalIP"),
                     n.spec.pod_cidr, info.kernel_version if info else None, info.kubelet_version if info else None])
    return _table(["NAME", "STATUS", "INTERNAL-IP", "POD-CIDR", "KERNEL-VERSION", "VERSION"], rows)


def policies_yaml(net: Any) -> str:
    items = [net.api_client.sanitize_for_serialization(p) for p in net.list_network_policy_for_all_namespaces().items]
    return yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": items}, sort_keys=False)


def events_text(core: Any) -> str:
    evs = sorted(core.list_namespaced_event(NAMESPACE).items, key=lambda e: str(e.last_timestamp or ""))
    return _table(["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
                  [[e.last_timestamp, e.type, e.reason, f"{e.involved_object.kind}/{e.involved_object.name}",
                    e.message] for e in evs])


def logs_text(core: Any, container: str) -> str:
    out = []
    for p in _novanet_pods(core):
        if container in {c.name for c in p.spec.containers or []}:
            log = core.read_namespaced_pod_log(p.metadata.name, NAMESPACE, container=container, tail_lines=500)
            out.append(f"==> {p.metadata.name} ({p.spec.node_name}) <==\n{log}")
    if not out:
        raise LookupError(f"no pod in {NAMESPACE} has a container {container}")
    return "\n".join(out)


def add_items(bundle: DebugBundle, config: NovaNetConfig) -> None:
    if config.stateSource.type != "kubernetes":
        return
    src = "kubernetes API"
    state: dict[str, Any] = {}

    def apis() -> tuple[Any, Any]:
        if "apis" not in state:
            state["apis"] = _apis(config)
        return state["apis"]

    bundle.add_item(item_name(1), lambda: pods_text(apis()[0]), 1, src)
    for n, c in CONTAINERS.items():
        bundle.add_item(item_name(n, "log"), lambda c=c: logs_text(apis()[0], c), n, src)
    bundle.add_item(item_name(5), lambda: nodes_text(apis()[0]), 5, src)
    bundle.add_item(item_name(10, "yaml"), lambda: policies_yaml(apis()[1]), 10, src)
    bundle.add_item(item_name(11), lambda: events_text(apis()[0]), 11, src)
