"""What the live maps decide for a new connection ``src -> dst:port/protocol`` (``policy explain``).

Every answer comes from lookups in the pinned kernel maps (the LPM tries do their own longest
match), walked in the order ``nv_policy_decide`` and the egress block of ``nv_from_pod`` use them
(datapath.c, and datapath6.c for IPv6: its family's endpoint, ep_policy and ipBlock maps, no
egress map). It is a second reading of the same maps, not a second policy engine: the compiled
answer comes from the agent, and ``novanetctl policy explain`` says when the two disagree.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Any

from novanet_core.protocols import protocol_number
from novanet_ebpf_policy.egressmap import VALUE as EGRESS_VALUE
from novanet_ebpf_policy.egressmap import egress_key
from novanet_ebpf_policy.layouts import (
    RULE_KEY_BITS,
    ConfigKey,
    EgressAction,
    EgressFlag,
    Endpoint6Key,
    EndpointKey,
    EndpointValue,
    EpPolicyFlag,
    PeerKind,
)
from novanet_ebpf_policy.policymap import EP_VALUE, RULE_VALUE, cidr_key, cidr_map, ep_map, ip_key, rule_key

ID_HOST, ID_WORLD = 1, 2
_CIDR_VALUE = struct.Struct("<I")


def _in(addr: int, net_key: ConfigKey, len_key: ConfigKey, m: Any) -> bool:
    plen = m.config_get(len_key)
    if not 0 < plen <= 32:
        return False
    mask = (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF
    return (addr & mask) == (m.config_get(net_key) & mask)


def _endpoint(m: Any, ip: str) -> EndpointValue | None:
    a = ipaddress.ip_address(ip)
    if a.version == 6:
        raw = m.lookup("endpoints_v6", Endpoint6Key.from_buffer_copy(a.packed))
    else:
        raw = m.lookup("endpoints", EndpointKey(ip=int(a)))
    return EndpointValue.from_buffer_copy(raw) if raw else None


def _is_host(m: Any, ip: str) -> bool:
    """The node's address or the pods' gateway (identity HOST), as nv_ip6_is_host / CONFIG say."""
    a = ipaddress.ip_address(ip)
    if a.version == 4:
        return int(a) in (m.config_get(ConfigKey.NODE_IP), m.config_get(ConfigKey.GATEWAY_IP))
    hi, lo = int.from_bytes(a.packed[:8], "little"), int.from_bytes(a.packed[8:], "little")
    return any((hi, lo) == (m.config_get(h), m.config_get(low)) != (0, 0)
               for h, low in ((ConfigKey.NODE_IP6_HI, ConfigKey.NODE_IP6_LO),
                              (ConfigKey.GATEWAY_IP6_HI, ConfigKey.GATEWAY_IP6_LO)))


def _rule(m: Any, refs: dict[int, str], set_id: int, kind: int, peer: int, proto: int, port: int) -> str | None:
    raw = m.lookup("policy_rules", rule_key(RULE_KEY_BITS, set_id, kind, peer, proto, port))
    if raw is None:
        return None
    return refs.get(RULE_VALUE.unpack(raw)[0], f"rule #{RULE_VALUE.unpack(raw)[0]}")


def _side(m: Any, refs: dict[int, str], ep_ip: str, ingress: bool, peer_id: int, peer_ip: str, proto: int,
          port: int) -> dict[str, Any]:
    raw = m.lookup(ep_map(ep_ip), ip_key(ep_ip))
    if raw is None:
        deny = bool(m.config_get(ConfigKey.DEFAULT_DENY))
        return {"entry": None, "isolated": deny, "allowed": not deny,
                "why": "no ep_policy entry: defaultDeny decides" if deny else "no ep_policy entry: not isolated"}
    ingress_set, egress_set, flags, _ = EP_VALUE.unpack(raw)
    flag = EpPolicyFlag.INGRESS_ISOLATED if ingress else EpPolicyFlag.EGRESS_ISOLATED
    set_id = ingress_set if ingress else egress_set
    out: dict[str, Any] = {"entry": {"ingress_set": ingress_set, "egress_set": egress_set, "flags": flags},
                           "set": set_id, "isolated": bool(flags & flag)}
    if not out["isolated"]:
        return {**out, "allowed": True, "why": "not isolated"}
    hits = []
    if (name := _rule(m, refs, set_id, PeerKind.ANY, 0, proto, port)) is not None:
        hits.append({"peer": "any", "rule": name})
    if peer_id >= 256 and (name := _rule(m, refs, set_id, PeerKind.IDENTITY, peer_id, proto, port)) is not None:
        hits.append({"peer": f"identity {peer_id}", "rule": name})
    host = ipaddress.ip_network(peer_ip)  # the full-length key: the trie answers its longest prefix
    craw = m.lookup(cidr_map(host), cidr_key(host))
    if craw is not None:
        cid = _CIDR_VALUE.unpack(craw)[0]
        if (name := _rule(m, refs, set_id, PeerKind.CIDR, cid, proto, port)) is not None:
            hits.append({"peer": f"cidr #{cid}", "rule": name})
    allowed = bool(hits)
    return {**out, "allowed": allowed, "hits": hits,
            "why": f"policy_rules set {set_id}: " + ("admitted" if allowed else "no entry admits it")}


def check(m: Any, refs: dict[int, str], src_ip: str, dst_ip: str, protocol: str | int, port: int) -> dict[str, Any]:
    """The live maps' verdict for a new connection, side by side as the programs evaluate it."""
    proto = protocol_number(protocol)
    v6 = ipaddress.ip_address(src_ip).version == 6
    if ipaddress.ip_address(dst_ip).version != (6 if v6 else 4):
        raise ValueError("src_ip/dst_ip: an IPv4 and an IPv6 address are not one connection")
    s, d = src_ip, dst_ip
    node_ip = m.config_get(ConfigKey.NODE_IP)
    src, dst = _endpoint(m, s), _endpoint(m, d)

    def local(e: EndpointValue | None) -> bool:
        return e is not None and e.ifindex != 0 and e.node_ip in (0, node_ip)

    out: dict[str, Any] = {"src": {"ip": src_ip, "in_endpoints": src is not None, "local": local(src),
                                   "identity": src.identity if src else None},
                           "dst": {"ip": dst_ip, "in_endpoints": dst is not None, "local": local(dst),
                                   "identity": dst.identity if dst else None},
                           "protocol": proto, "port": port}
    if src is None:
        out.update(allowed=False, reason="NO_IDENTITY: the source is not in the endpoints map")
        return out
    src_id = src.identity
    dst_id = dst.identity if dst else ID_WORLD
    if dst is None and _is_host(m, d):
        dst_id = ID_HOST
    out["dst"]["identity"] = dst_id
    egress_entry = None
    # the egress map is IPv4's (datapath6.c does not consult it)
    if (not v6 and dst is None and dst_id != ID_HOST
            and not _in(int(ipaddress.IPv4Address(d)), ConfigKey.CLUSTER_CIDR_IP, ConfigKey.CLUSTER_CIDR_PREFIX_LEN, m)):
        for sid in (src_id, 0):
            raw = m.lookup("egress", egress_key(sid, f"{dst_ip}/32"))
            if raw is not None:
                action, flags, _, slot, snat = EGRESS_VALUE.unpack(raw)
                egress_entry = {"src_identity": sid, "action": EgressAction(action).name, "flags": flags,
                                "rule": slot, "snat_ip": str(ipaddress.IPv4Address(snat)) if snat != bytes(4) else ""}
                break
    out["egress_map"] = egress_entry
    if m.config_get(ConfigKey.POLICY_COUNT):
        out["overrides"] = "the identity-pair map `policies` has entries: they are probed first (see policy --datapath)"
    if egress_entry and egress_entry["action"] == "DENY":
        out.update(allowed=False, reason="egress map: DENY")
        return out
    decisive = egress_entry is not None and not egress_entry["flags"] & (EgressFlag.PORTS | EgressFlag.DEFAULT)
    out["egress"] = (_side(m, refs, s, False, dst_id, d, proto, port) if local(src) and not decisive
                     else {"allowed": True, "why": "the egress map decides" if decisive else "source not local"})
    out["ingress"] = (_side(m, refs, d, True, src_id, s, proto, port) if local(dst)
                      else {"allowed": True, "why": "destination not local: its node decides"})
    allowed = out["egress"]["allowed"] and out["ingress"]["allowed"]
    side = "egress" if not out["egress"]["allowed"] else "ingress"
    out.update(allowed=allowed, reason="allowed" if allowed else f"POLICY_DENIED ({side})")
    return out
