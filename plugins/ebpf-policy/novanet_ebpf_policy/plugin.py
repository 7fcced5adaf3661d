"""Entry point ``ebpf-policy`` (group ``novanet.plugins``): registers the ``ebpf`` datapath,
its dataplane API methods, its novanetctl commands and its metrics."""

from __future__ import annotations

import weakref
from typing import Any

from novanet_core.backends import BackendContext
from novanet_core.hookspecs import hookimpl
from novanet_ebpf_policy.backend import EbpfDatapath

# The backend the dataplane process created; API methods and metrics read it. Weak, so a test
# that drops its backend does not keep maps open through us.
_active: weakref.ref[EbpfDatapath] | None = None


def active_backend() -> EbpfDatapath | None:
    return _active() if _active else None


def create_backend(ctx: BackendContext) -> EbpfDatapath:
    global _active
    b = EbpfDatapath(ctx)
    _active = weakref.ref(b)
    return b


@hookimpl
def novanet_register_backends(registry: Any) -> None:
    registry.add("datapath", "ebpf", create_backend,
                 description="eBPF: tcx programs, redirect_peer, pinned maps, identities, flow events")


@hookimpl
def novanet_register_api(router: Any, component: str) -> None:
    if component != "dataplane":
        return
    from novanet_ebpf_policy import api

    api.register(router, active_backend)


@hookimpl
def novanet_register_cli(cli: Any, program: str) -> None:
    if program != "novanetctl":
        return
    from novanet_ebpf_policy import cli as clim

    clim.register(cli)


@hookimpl
def novanet_register_metrics(registry: Any, component: str) -> None:
    if component == "agent":
        from novanet_core.agent.policy_sync import PolicyMetrics

        registry.register(PolicyMetrics())  # novanet_agent_policy_programming_seconds
        return
    if component != "dataplane":
        return
    from novanet_ebpf_policy.metrics import DatapathCollector

    registry.register(DatapathCollector(active_backend))


@hookimpl
def novanet_debug_bundle(bundle: Any, config: Any) -> None:
    """The eBPF datapath's part, read from the node's dataplane: egress map with counters, the
    `novanetctl egress` and `bpf` views, decoded maps, the pinned objects."""
    from novanet_core.api.client import ApiClient

    def dp(method: str) -> Any:
        with ApiClient(config.sockets.dataplane, timeout=30) as c:
            return c.call(method)

    bundle.add_command("bpffs-pins.txt", ["ls", "-laR", config.bpf.root])
    for name, method in (("ebpf-status.json", "ebpf.status"), ("egress.json", "ebpf.egress"),
                         ("bpf-stats.json", "ebpf.bpf_stats"), ("ebpf-maps.json", "ebpf.maps"),
                         ("ebpf-policy-entries.json", "ebpf.policy_entries"), ("ebpf-drops.json", "ebpf.drops")):
        bundle.add_item(name, lambda method=method: dp(method), source="plugin ebpf-policy")
