"""FRR configuration text: parse ``show running-config`` into a RoutingState, and diff two states.

FRR prints only values that differ from its defaults, and the defaults depend on the
``frr defaults <profile>`` line, so the parser fills absent values from that profile. The diff is
computed on values, not lines: re-sending a line FRR already holds is avoided entirely, because
some re-sent lines (router-id, remote-as) reset sessions.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from novanet_core.ipfamily import family_of
from novanet_frr_bgp.model import BfdProfile, BgpInstance, Neighbor, RoutingState

# FRR 8.4 lib/defaults for bgpd: (keepalive, hold, ebgp-requires-policy) per profile.
PROFILE_DEFAULTS = {
    "traditional": {"keepalive": 60, "hold": 180, "ebgp_requires_policy": True},
    "datacenter": {"keepalive": 3, "hold": 9, "ebgp_requires_policy": False},
}
DEFAULT_PROFILE = "traditional"
GR_RESTART_DEFAULT, GR_STALEPATH_DEFAULT = 120, 360
BFD_DEFAULTS = (300, 300, 3)


def fresh_instance(asn: int, profile: str) -> BgpInstance:
    d = PROFILE_DEFAULTS.get(profile, PROFILE_DEFAULTS[DEFAULT_PROFILE])
    return BgpInstance(asn=asn, keepalive=d["keepalive"], hold=d["hold"], ebgp_requires_policy=d["ebgp_requires_policy"])


def parse_running_config(text: str) -> tuple[RoutingState, str]:
    """The managed state FRR holds, and its defaults profile name."""
    profile = DEFAULT_PROFILE
    state = RoutingState()
    nbr: dict[str, dict[str, object]] = {}
    block: list[str] = []  # context stack: ["router bgp"], ["router bgp", "af"], ["bfd"], ["bfd", "profile X"]
    cur_profile: dict[str, int] | None = None
    for raw in text.splitlines():
        line = raw.rstrip()
        s = line.strip()
        if not s or s == "!":
            continue
        depth = len(line) - len(line.lstrip(" "))
        if depth == 0:
            block = []
            cur_profile = None
            w = s.split()
            if w[:2] == ["frr", "defaults"] and len(w) == 3:
                profile = w[2]
            elif w[:2] == ["router", "bgp"] and len(w) == 3 and w[2].isdigit():
                state.bgp = fresh_instance(int(w[2]), profile)
                block = ["router bgp"]
            elif s == "bfd":
                block = ["bfd"]
            continue
        if not block:
            continue
        if block[0] == "router bgp" and state.bgp is not None:
            if depth == 1:
                block = ["router bgp"]
                if s in ("address-family ipv4 unicast", "address-family ipv6 unicast"):
                    block = ["router bgp", s.split()[1]]
                else:
                    _bgp_line(state.bgp, nbr, s.split(), s)
            elif depth == 2 and block[-1] in ("ipv4", "ipv6"):
                w = s.split()
                if w[0] == "network" and len(w) >= 2:
                    state.bgp.networks.add(w[1])
                elif block[-1] == "ipv6" and w[0] == "neighbor" and w[2:] == ["activate"]:
                    nbr.setdefault(w[1], {})["ipv6"] = True
        elif block[0] == "bfd":
            w = s.split()
            if depth == 1:
                if w[0] == "profile" and len(w) == 2:
                    cur_profile = {"rx": BFD_DEFAULTS[0], "tx": BFD_DEFAULTS[1], "mult": BFD_DEFAULTS[2]}
                    state.bfd_profiles[w[1]] = BfdProfile(w[1], *BFD_DEFAULTS)
                    block = ["bfd", w[1]]
                else:
                    block, cur_profile = ["bfd"], None
            elif depth == 2 and cur_profile is not None and len(w) == 2 and w[1].isdigit():
                key = {"receive-interval": "rx", "transmit-interval": "tx", "detect-multiplier": "mult"}.get(w[0])
                if key:
                    cur_profile[key] = int(w[1])
                    name = block[1]
                    state.bfd_profiles[name] = BfdProfile(name, cur_profile["rx"], cur_profile["tx"], cur_profile["mult"])
    if state.bgp is not None:
        for addr, attrs in nbr.items():
            if "remote_as" in attrs:
                state.bgp.neighbors[addr] = Neighbor(address=addr, **attrs)  # type: ignore[arg-type]
    return state, profile


def _bgp_line(bgp: BgpInstance, nbr: dict[str, dict[str, object]], w: list[str], s: str) -> None:
    if w[:2] == ["bgp", "router-id"] and len(w) == 3:
        bgp.router_id = w[2]
    elif s == "no bgp ebgp-requires-policy":
        bgp.ebgp_requires_policy = False
    elif s == "bgp ebgp-requires-policy":
        bgp.ebgp_requires_policy = True
    elif w[:2] == ["timers", "bgp"] and len(w) == 4:
        bgp.keepalive, bgp.hold = int(w[2]), int(w[3])
    elif s == "bgp graceful-restart":
        bgp.graceful_restart = True
    elif s == "bgp graceful-restart preserve-fw-state":
        bgp.preserve_fw_state = True
    elif w[:3] == ["bgp", "graceful-restart", "restart-time"]:
        bgp.restart_time = int(w[3])
    elif w[:3] == ["bgp", "graceful-restart", "stalepath-time"]:
        bgp.stalepath_time = int(w[3])
    elif w[0] == "neighbor" and len(w) >= 3:
        a = nbr.setdefault(w[1], {})
        rest = w[2:]
        if rest[0] == "remote-as" and len(rest) == 2 and rest[1].isdigit():
            a["remote_as"] = int(rest[1])
        elif rest[0] == "remote-as" and len(rest) == 2 and rest[1] == "internal":
            a["remote_as"] = bgp.asn
        elif rest[0] == "remote-as":
            a["remote_as"] = 0  # "external": not something NovaNet writes; the diff replaces it
        elif rest[0] == "description":
            a["description"] = s.split(" description ", 1)[1]
        elif rest[0] == "password" and len(rest) == 2:
            a["password"] = rest[1]
        elif rest == ["bfd"]:
            a["bfd"] = True
        elif rest[:2] == ["bfd", "profile"] and len(rest) == 3:
            a["bfd"], a["bfd_profile"] = True, rest[2]
        elif rest[0] == "ebgp-multihop":
            a["ebgp_multihop"] = int(rest[1]) if len(rest) == 2 else 255


# --------------------------------------------------------------------------- diff


def diff(cur: RoutingState, want: RoutingState, profile: str = DEFAULT_PROFILE,
         managed_profiles: Iterable[str] = ()) -> list[str]:
    """vtysh configuration commands (inside ``configure terminal``) that turn ``cur`` into ``want``.

    Indentation marks context only (vtysh ignores it). BFD profiles come first because BGP
    neighbors reference them, and stale profiles go last, after no neighbor uses them.
    """
    out: list[str] = []
    for name, p in want.bfd_profiles.items():
        if cur.bfd_profiles.get(name) != p:
            out += ["bfd", f" profile {name}", f"  receive-interval {p.receive_interval}",
                    f"  transmit-interval {p.transmit_interval}", f"  detect-multiplier {p.detect_multiplier}",
                    " exit", "exit"]
    cb, wb = cur.bgp, want.bgp
    if cb is not None and (wb is None or cb.asn != wb.asn):
        out.append(f"no router bgp {cb.asn}")
        cb = None
    if wb is not None:
        base = cb if cb is not None else fresh_instance(wb.asn, profile)
        body = _bgp_body(base, wb)
        if body or cb is None:
            out += [f"router bgp {wb.asn}", *body, "exit"]
    stale = [n for n in cur.bfd_profiles if n not in want.bfd_profiles and n in set(managed_profiles)]
    if stale:
        out += ["bfd", *[f" no profile {n}" for n in stale], "exit"]
    return out


def _bgp_body(c: BgpInstance, w: BgpInstance) -> list[str]:
    out: list[str] = []
    if c.router_id != w.router_id and w.router_id:
        out.append(f" bgp router-id {w.router_id}")
    if c.ebgp_requires_policy != w.ebgp_requires_policy:
        out.append(" bgp ebgp-requires-policy" if w.ebgp_requires_policy else " no bgp ebgp-requires-policy")
    if (c.keepalive, c.hold) != (w.keepalive, w.hold):
        out.append(f" timers bgp {w.keepalive} {w.hold}")
    if c.graceful_restart != w.graceful_restart:
        out.append(" bgp graceful-restart" if w.graceful_restart else " no bgp graceful-restart")
    if c.preserve_fw_state != w.preserve_fw_state:
        out.append(f" {'' if w.preserve_fw_state else 'no '}bgp graceful-restart preserve-fw-state")
    if c.restart_time != w.restart_time:
        out.append(f" bgp graceful-restart restart-time {w.restart_time}")
    if c.stalepath_time != w.stalepath_time:
        out.append(f" bgp graceful-restart stalepath-time {w.stalepath_time}")
    for addr in sorted(set(c.neighbors) - set(w.neighbors)):
        out.append(f" no neighbor {addr}")
    for addr, n in w.neighbors.items():
        o = c.neighbors.get(addr)
        if o is None or o.remote_as != n.remote_as:
            out.append(f" neighbor {addr} remote-as {n.remote_as}")
        o = o or Neighbor(addr, n.remote_as)
        out += _neighbor_attrs(o, n)
    for fam, af in ((4, "ipv4"), (6, "ipv6")):
        add = sorted(p for p in w.networks - c.networks if family_of(p) == fam)
        remove = sorted(p for p in c.networks - w.networks if family_of(p) == fam)
        activate = []
        if fam == 6:  # IPv4 unicast is active on every neighbor by FRR's default; IPv6 is not
            for addr, n in w.neighbors.items():
                was = c.neighbors.get(addr)
                if n.ipv6 != (was.ipv6 if was is not None else False):
                    activate.append(f"  {'' if n.ipv6 else 'no '}neighbor {addr} activate")
        if add or remove or activate:
            out += [f" address-family {af} unicast", *[f"  network {p}" for p in add],
                    *[f"  no network {p}" for p in remove], *activate, " exit-address-family"]
    return out


def _neighbor_attrs(o: Neighbor, n: Neighbor) -> list[str]:
    a = n.address
    out = []
    if o.description != n.description:
        out.append(f" neighbor {a} description {n.description}" if n.description else f" no neighbor {a} description")
    if o.password != n.password:
        out.append(f" neighbor {a} password {n.password}" if n.password else f" no neighbor {a} password")
    if o.ebgp_multihop != n.ebgp_multihop:
        out.append(f" neighbor {a} ebgp-multihop {n.ebgp_multihop}" if n.ebgp_multihop else f" no neighbor {a} ebgp-multihop")
    if (o.bfd, o.bfd_profile) != (n.bfd, n.bfd_profile):
        if not n.bfd:
            out.append(f" no neighbor {a} bfd")
        elif n.bfd_profile:
            out.append(f" neighbor {a} bfd profile {n.bfd_profile}")
        else:
            if o.bfd_profile:
                out.append(f" no neighbor {a} bfd profile")
            out.append(f" neighbor {a} bfd")
    return out


def render_config(want: RoutingState, profile: str = "datacenter") -> str:
    """A complete FRR config for ``want`` (what a fresh FRR would be given), for docs and checks."""
    lines = [f"frr defaults {profile}", *diff(RoutingState(), want, profile)]
    return "\n".join(lines) + "\n"


def redact(commands: Iterable[str]) -> list[str]:
    """Commands for logs and status: BGP passwords replaced."""
    out = []
    for c in commands:
        w = c.split()
        if len(w) >= 4 and w[0] == "neighbor" and w[2] == "password":
            c = c[: c.index(" password ") + len(" password ")] + "<redacted>"
        out.append(c)
    return out


def keep_neighbors(want: RoutingState, cur: RoutingState) -> RoutingState:
    """``want`` plus the neighbors ``cur`` has that ``want`` lacks (nothing is deleted), same ASN only."""
    if want.bgp is None or cur.bgp is None or cur.bgp.asn != want.bgp.asn:
        return want
    merged = {**cur.bgp.neighbors, **want.bgp.neighbors}
    profiles = dict(want.bfd_profiles)
    for n in merged.values():
        if n.bfd_profile and n.bfd_profile in cur.bfd_profiles:
            profiles.setdefault(n.bfd_profile, cur.bfd_profiles[n.bfd_profile])
    return RoutingState(bgp=replace(want.bgp, neighbors=merged), bfd_profiles=profiles)
