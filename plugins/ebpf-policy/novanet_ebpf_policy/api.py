"""Methods the plugin adds to the dataplane's local API (``novanet_register_api``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from novanet_core.api.protocol import ApiError
from novanet_core.backends import ConfigError
from novanet_ebpf_policy.backend import DatapathError, EbpfDatapath
from novanet_ebpf_policy.flowfilter import FilterError, FlowFilter


def _flag(p: dict[str, Any], key: str) -> bool:
    v = p.get(key, False)
    if not isinstance(v, bool):
        raise ApiError("invalid_params", f"{key}: {v!r} is not a boolean")
    return v


def _num(p: dict[str, Any], key: str, default: int, hi: int) -> int:
    v = p.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= hi:
        raise ApiError("invalid_params", f"{key}: {v!r} is not an integer in 0..{hi}")
    return v


def _guard(fn: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any]], Any]:
    def wrapped(p: dict[str, Any]) -> Any:
        try:
            return fn(p)
        except (ConfigError, DatapathError, FilterError, ValueError) as e:
            raise ApiError("invalid_params", str(e)) from None

    wrapped.__doc__ = fn.__doc__
    return wrapped


class _Methods:
    """The plugin's ``ebpf.*`` dataplane API methods, answered by the datapath backend of this
    process (``get_backend``: None or without maps while the datapath is not running)."""

    def __init__(self, get_backend: Callable[[], EbpfDatapath | None]) -> None:
        self.get_backend = get_backend

    def be(self) -> EbpfDatapath:
        b = self.get_backend()
        if b is None or b.maps is None:
            raise ApiError("unavailable", "the ebpf datapath is not running in this process")
        return b

    def flows(self, p: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Flow events: params identity (0 = all), drops_only, follow, limit (history, default 100),
        filter (an object of FlowFilter fields, see novanet_ebpf_policy.flowfilter)."""
        identity = _num(p, "identity", 0, 0xFFFFFFFF)
        drops_only, follow = _flag(p, "drops_only"), _flag(p, "follow")
        limit = _num(p, "limit", 100, 1 << 20)
        flt = FlowFilter.from_params(p.get("filter"))
        b = self.be()
        if follow:
            return b.flows.follow(identity, drops_only, limit, flt=flt)
        return iter(b.flows.recent(identity, drops_only, limit, flt))

    def drops(self, p: dict[str, Any]) -> dict[str, Any]:
        """Drop counters by reason (summed over CPUs) and flow-event loss counters."""
        b = self.be()
        return {"drops": b.drop_counters(), "flow_events": b.flow_counters()}

    def bpf_stats(self, p: dict[str, Any]) -> dict[str, Any]:
        """Per-program run_cnt, run_time_ns, avg_ns (needs kernel.bpf_stats_enabled=1)."""
        return self.be().bpf_stats()

    def maps_(self, p: dict[str, Any]) -> list[dict[str, Any]]:
        """Pinned maps: pin path, versioned path, kernel id, type, sizes, entries."""
        return self.be().map_info()

    def status(self, p: dict[str, Any]) -> dict[str, Any]:
        """Datapath status: attach mode, programs, links, counters."""
        return self.be().status()

    def endpoints(self, p: dict[str, Any]) -> list[dict[str, Any]]:
        """Endpoints as the live pinned map holds them."""
        return self.be().list_endpoints()

    def policy_list(self, p: dict[str, Any]) -> list[dict[str, Any]]:
        """Identity-pair policy entries."""
        return self.be().list_policies()

    def policy_upsert(self, p: dict[str, Any]) -> dict[str, Any]:
        """Add/replace one entry: src_identity, dst_identity, protocol, dst_port, action (allow|deny)."""
        self.be().upsert_policy(p)
        return {}

    def policy_delete(self, p: dict[str, Any]) -> dict[str, Any]:
        """Delete one entry: src_identity, dst_identity, protocol, dst_port."""
        return {"deleted": self.be().delete_policy(p)}

    def policy_sync(self, p: dict[str, Any]) -> dict[str, Any]:
        """Full replace: params entries = [{src_identity, dst_identity, protocol, dst_port, action}]."""
        entries = p.get("entries")
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise ApiError("invalid_params", "entries: must be a list of objects")
        return self.be().sync_policies(entries)

    def reload(self, p: dict[str, Any]) -> dict[str, Any]:
        """Recompile the programs and swap them atomically into every attachment."""
        return self.be().reload()

    def policy_check(self, p: dict[str, Any]) -> dict[str, Any]:
        """What the live maps decide for a new connection: src_ip, dst_ip, port, protocol (policy explain)."""
        for k in ("src_ip", "dst_ip"):
            if not isinstance(p.get(k), str):
                raise ApiError("invalid_params", f"{k}: required, an IPv4 address")
        return self.be().check_connection(p["src_ip"], p["dst_ip"], p.get("protocol", "TCP"),
                                     _num(p, "port", 0, 65535))

    def egress(self, p: dict[str, Any]) -> dict[str, Any]:
        """The egress map (traffic leaving the cluster) with per-rule packet and byte counters."""
        return self.be().egress_rules()

    def traffic(self, p: dict[str, Any]) -> dict[str, Any]:
        """Packets and bytes per direction: forwarded, dropped per reason, connections admitted."""
        return self.be().traffic()

    def policy_entries(self, p: dict[str, Any]) -> dict[str, Any]:
        """The live NetworkPolicy maps decoded: rule entries (set, peer, protocol, ports, policy), CIDRs, endpoints."""
        return self.be().list_policy()


def register(router: Any, get_backend: Callable[[], EbpfDatapath | None]) -> None:
    m = _Methods(get_backend)
    for name, fn, stream in (
        ("ebpf.flows", m.flows, True), ("ebpf.drops", m.drops, False), ("ebpf.bpf_stats", m.bpf_stats, False),
        ("ebpf.maps", m.maps_, False), ("ebpf.status", m.status, False), ("ebpf.endpoints", m.endpoints, False),
        ("ebpf.policy_list", m.policy_list, False), ("ebpf.policy_upsert", m.policy_upsert, False),
        ("ebpf.policy_delete", m.policy_delete, False), ("ebpf.policy_sync", m.policy_sync, False),
        ("ebpf.reload", m.reload, False),
        ("ebpf.policy_entries", m.policy_entries, False), ("ebpf.egress", m.egress, False),
        ("ebpf.traffic", m.traffic, False), ("ebpf.policy_check", m.policy_check, False),
    ):
        router.add(name, _guard(fn), stream=stream)
