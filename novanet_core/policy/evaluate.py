"""Per-packet meaning of the compiled form: the behaviour every datapath must reproduce.

A packet ``src -> dst (protocol, port)`` is allowed iff the source endpoint's egress direction
allows it (when the source is a compiled endpoint) AND the destination endpoint's ingress direction
allows it (when the destination is a compiled endpoint). A direction allows iff it is not isolated
or one of its rules matches (peer identity/IP and protocol/port). ``port`` is the destination port.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from novanet_core.policy.compiled import DirectionResult, EndpointPolicy
from novanet_core.state.model import Pod


class PolicyView(Protocol):
    endpoints: Mapping[str, EndpointPolicy]
    pods: Mapping[str, Pod]

    def identity_of(self, pod_key: str) -> int | None: ...

    def pod_by_ip(self, ip: str) -> Pod | None: ...


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    reason: str
    # None: that side is not a compiled endpoint here (outside address or a pod on another node).
    egress: DirectionResult | None
    ingress: DirectionResult | None

    @property
    def policies(self) -> tuple[str, ...]:
        """Every policy that took part: matched a rule or isolated a side."""
        out: set[str] = set()
        for d in (self.egress, self.ingress):
            if d is not None:
                out |= set(d.allowed_by) | set(d.selected_by)
        return tuple(sorted(out))


@dataclass(frozen=True)
class _End:
    label: str
    pod: Pod | None
    ip: str | None
    identity: int | None


def _resolve(view: PolicyView, x: str | Pod) -> _End:
    if isinstance(x, Pod):
        return _End(x.key, x, x.ip, view.identity_of(x.key))
    try:
        ip = str(ipaddress.ip_address(x))
    except ValueError:
        pod = view.pods.get(x)
        if pod is None:
            raise ValueError(f"{x!r} is neither an IP address nor a known pod (namespace/name)") from None
        return _End(pod.key, pod, pod.ip, view.identity_of(pod.key))
    pod = view.pod_by_ip(ip)
    if pod is None:
        return _End(ip, None, ip, None)
    return _End(pod.key, pod, ip, view.identity_of(pod.key))


def _side(d: DirectionResult, name: str, who: str) -> str:
    if not d.isolated:
        return ""
    if d.allowed:
        return f"{name} of {who} allowed by {', '.join(d.allowed_by)}"
    why = f"isolated by {', '.join(d.selected_by)}" if d.selected_by else "isolated by defaultDeny"
    return f"{name} of {who} {why}: no policy allowed it"


def evaluate(view: PolicyView, src: str | Pod, dst: str | Pod, protocol: str, port: int) -> Verdict:
    """Decide one packet; ``src``/``dst`` are pods, ``namespace/name`` keys or IP addresses."""
    s, d = _resolve(view, src), _resolve(view, dst)
    protocol = protocol.upper()
    eg = ing = None
    s_ep = view.endpoints.get(s.pod.key) if s.pod else None
    d_ep = view.endpoints.get(d.pod.key) if d.pod else None
    if s_ep is not None:
        eg = s_ep.egress.check(d.identity, d.ip, protocol, port)
    if d_ep is not None:
        ing = d_ep.ingress.check(s.identity, s.ip, protocol, port)
    allowed = (eg is None or eg.allowed) and (ing is None or ing.allowed)
    parts = [p for p in (_side(eg, "egress", s.label) if eg else "", _side(ing, "ingress", d.label) if ing else "")
             if p]
    if allowed:
        reason = "allowed: " + ("; ".join(parts) if parts else "no policy isolates either side")
    else:
        reason = "denied: " + "; ".join(p for p in parts if "no policy allowed it" in p)
    return Verdict(allowed, reason, eg, ing)
