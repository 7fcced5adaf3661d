"""Agent API methods (``routing.*``) behind ``novanetctl routing``.

The backend object lives in the agent; the factory keeps the instance it made in
:data:`novanet_frr_bgp.plugin.INSTANCE`, which these handlers read on every call (a handler
registered before the backend exists, or in a process without one, answers with a clear error).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from novanet_core.api.protocol import ApiError
from novanet_core.api.router import ApiRouter
from novanet_frr_bgp.vtysh import FrrUnavailable


def register(router: ApiRouter, backend: Callable[[], Any]) -> None:
    def be() -> Any:
        b = backend()
        if b is None:
            raise ApiError("not_enabled", "routing not enabled (this node runs routingMode: overlay)")
        return b

    def live(fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except FrrUnavailable as e:
            raise ApiError("frr_unavailable", f"FRR not reachable: {e}") from None

    def status(_: dict[str, Any]) -> dict[str, Any]:
        """Routing backend status: FRR connection, ASN, router-id, mode, last change."""
        return be().status()

    def peers(_: dict[str, Any]) -> list[dict[str, Any]]:
        """BGP neighbors as FRR reports them (show bgp summary json), with BFD state."""
        return live(be().peers)

    def prefixes(_: dict[str, Any]) -> list[dict[str, Any]]:
        """BGP table: the prefixes this node advertises and the ones it learned."""
        return live(be().prefixes)

    def bfd(_: dict[str, Any]) -> list[dict[str, Any]]:
        """BFD sessions (show bfd peers json)."""
        return live(be().bfd_sessions)

    def reconcile(_: dict[str, Any]) -> dict[str, Any]:
        """Diff FRR against the desired state now and apply the difference."""
        return be().reconcile("api")

    def advertise(p: dict[str, Any]) -> dict[str, Any]:
        """Advertise (on=true) or withdraw (on=false) this node's PodCIDR."""
        on = p.get("on", True)
        if not isinstance(on, bool):
            raise ApiError("bad_params", "on: must be true or false")
        return be().set_advertise(on)

    def events(_: dict[str, Any]) -> list[dict[str, Any]]:
        """Recent routing events (frr_connected, bgp_config_changed, bgp_config_failed, ...)."""
        return list(be().events)

    for name, fn in (("routing.status", status), ("routing.peers", peers), ("routing.prefixes", prefixes),
                     ("routing.bfd", bfd), ("routing.reconcile", reconcile), ("routing.advertise", advertise),
                     ("routing.events", events)):
        router.add(name, fn)
