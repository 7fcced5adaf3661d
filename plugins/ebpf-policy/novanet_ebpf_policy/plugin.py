"""Entry point ``ebpf-policy`` (group ``novanet.plugins``): registers the ``ebpf`` datapath,
its dataplane API methods, its novanetctl commands and its metrics."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from novanet_core.api.client import ApiClient
from novanet_core.hookspecs import hookimpl
from novanet_ebpf_policy.backend import EbpfDatapath

NOVANET_PLUGIN_API = ">=1.0,<2"  # the NovaNet plugin API versions this plugin works with


def _ours(backends: Mapping[str, Any]) -> EbpfDatapath | None:
    b = backends.get("datapath")
    return b if isinstance(b, EbpfDatapath) else None


@hookimpl
def novanet_register_backends(registry: Any) -> None:
    registry.add("datapath", "ebpf", EbpfDatapath,
                 description="eBPF: tcx programs, redirect_peer, pinned maps, identities, flow events")


@hookimpl
def novanet_register_api(router: Any, component: str, backends: Mapping[str, Any]) -> None:
    b = _ours(backends)
    if component != "dataplane" or b is None:
        return
    from novanet_ebpf_policy import api

    api.register(router, lambda: b)


@hookimpl
def novanet_register_cli(cli: Any, program: str) -> None:
    if program != "novanetctl":
        return
    from novanet_ebpf_policy import cli as clim

    clim.register(cli)


@hookimpl
def novanet_register_metrics(registry: Any, component: str, backends: Mapping[str, Any]) -> None:
    b = _ours(backends)
    if component != "dataplane" or b is None:
        return
    from novanet_ebpf_policy.metrics import DatapathCollector

    registry.register(DatapathCollector(lambda: b))


@hookimpl
def novanet_debug_bundle(bundle: Any, config: Any) -> None:
    """The eBPF datapath's part, read from the node's dataplane: egress map with counters, the
    `novanetctl egress` and `bpf` views, decoded maps, the pinned objects."""

    def dp(method: str) -> Any:
        with ApiClient(config.sockets.dataplane, timeout=30) as c:
            return c.call(method)

    bundle.add_command("bpffs-pins.txt", ["ls", "-laR", config.bpf.root])
    for name, method in (("ebpf-status.json", "ebpf.status"), ("egress.json", "ebpf.egress"),
                         ("bpf-stats.json", "ebpf.bpf_stats"), ("ebpf-maps.json", "ebpf.maps"),
                         ("ebpf-policy-entries.json", "ebpf.policy_entries"), ("ebpf-drops.json", "ebpf.drops")):
        bundle.add_item(name, lambda method=method: dp(method), source="plugin ebpf-policy")
