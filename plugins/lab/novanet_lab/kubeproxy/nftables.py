"""The ``ip kube-proxy`` table kube-proxy's nftables mode installs, written from the lab's Services.

Shapes and names follow kube-proxy's ``pkg/proxy/nftables/proxier.go`` (``setupNFTables``,
``syncProxyRules``, ``writeServiceToEndpointRules``, ``nftablesBaseChains``,
``nftablesJumpChains``) with its defaults (masquerade mark 0x4000, ``--detect-local-mode=ClusterCIDR``,
every local address accepting NodePorts):

  base chains     filter-{prerouting,input,forward,output} at dstnat-10, filter-output-post-dnat at
                  dstnat+10, nat-{prerouting,output} at dstnat, nat-postrouting at srcnat
  services        ip daddr . meta l4proto . th dport vmap @service-ips;
                  fib daddr type local ... vmap @service-nodeports
  service-ips     ClusterIP . proto . port : goto service-<hash>-ns/svc/proto/port (or local-...)
  service-<..>    masquerade off-cluster sources; ClientIP affinity sets; numgen random mod N vmap {i : goto endpoint-..}
  endpoint-<..>   hairpin masquerade; update @affinity-..; dnat to ip:port
  external-<..>   NodePort traffic: masquerade (Cluster) or short-circuit rules (Local)
  no-endpoint-*   vmaps to reject-chain (no endpoints) or drop (no local endpoints)
  cluster-ips-check  reject other ports of a ClusterIP, drop unallocated addresses of serviceCIDR
  masquerading    marked packets masquerade fully-random

The IPv6 proxier writes the same into its own ``ip6 kube-proxy`` table (``setupNFTables``'s
``ipX``): ``ip6`` matches, ``ipv6_addr`` sets and map keys, ``::1`` where IPv4 has 127.0.0.0/8,
``dnat to [ip]:port``, and the endpoint's colons written as dots in chain names
(``servicePortEndpointChainNameBase``).

kube-proxy updates the table incrementally; the lab writes the whole table in one ``nft -f``
transaction (delete and re-create), which is what kube-proxy's full sync amounts to.
"""

from __future__ import annotations

import base64
import hashlib

from novanet_lab.kubeproxy.model import KPEndpoint, KPServicePort, plan

TABLE = "kube-proxy"
MASQ_MARK = "0x4000"
# name, type, hook, priority. kube-proxy writes "dstnat-10" etc.; this nft (1.0.6) accepts the
# named priorities only on some hooks, so they are written as numbers: dstnat = -100, srcnat = 100.
BASE_CHAINS = [
    ("filter-prerouting", "filter", "prerouting", -110),
    ("filter-input", "filter", "input", -110),
    ("filter-forward", "filter", "forward", -110),
    ("filter-output", "filter", "output", -110),
    ("filter-output-post-dnat", "filter", "output", -90),
    ("nat-prerouting", "nat", "prerouting", -100),
    ("nat-output", "nat", "output", -100),
    ("nat-postrouting", "nat", "postrouting", 100),
]
JUMP_CHAINS = [  # (regular chain, base chain that jumps to it, match)
    ("nodeport-endpoints-check", "filter-input", "ct state new"),
    ("service-endpoints-check", "filter-input", "ct state new"),
    ("service-endpoints-check", "filter-forward", "ct state new"),
    ("service-endpoints-check", "filter-output", "ct state new"),
    ("firewall-check", "filter-prerouting", "ct state new"),
    ("firewall-check", "filter-output", "ct state new"),
    ("services", "nat-output", ""),
    ("services", "nat-prerouting", ""),
    ("masquerading", "nat-postrouting", ""),
    ("cluster-ips-check", "filter-forward", "ct state new"),
    ("cluster-ips-check", "filter-output-post-dnat", "ct state new"),
]


def _base(name: str) -> str:
    h = base64.b32encode(hashlib.sha256(name.encode()).digest()).decode()[:8]
    return f"{h}-{name}"


def _svc_base(sp: KPServicePort) -> str:
    ns_name, _, port = sp.name.partition(":")
    return _base(f"{ns_name}/{sp.protocol}/{port}")


def service_chain(sp: KPServicePort) -> str:
    return "service-" + _svc_base(sp)


def local_chain(sp: KPServicePort) -> str:
    return "local-" + _svc_base(sp)


def external_chain(sp: KPServicePort) -> str:
    return "external-" + _svc_base(sp)


def _ep_base(sp: KPServicePort, ep: KPEndpoint) -> str:
    ns_name, _, port = sp.name.partition(":")
    return _base(f"{ns_name}/{sp.protocol}/{port}__{ep.ip.replace(':', '.')}/{ep.port}")


def endpoint_chain(sp: KPServicePort, ep: KPEndpoint) -> str:
    return "endpoint-" + _ep_base(sp, ep)


def affinity_set(sp: KPServicePort, ep: KPEndpoint) -> str:
    return "affinity-" + _ep_base(sp, ep)


def _q(text: str) -> str:
    return '"' + text.replace('"', "'") + '"'


def table(family: int) -> str:
    """``ip kube-proxy`` or ``ip6 kube-proxy``: the table of ``family``'s proxier."""
    return f"{'ip6' if family == 6 else 'ip'} {TABLE}"


def render(ports: list[KPServicePort], cluster_cidr: str, service_cidr: str, family: int = 4) -> str:
    """One ``nft -f`` transaction that replaces the whole table of ``family``'s proxier."""
    t = table(family)
    ipx, addr = ("ip6", "ipv6_addr") if family == 6 else ("ip", "ipv4_addr")
    no_localhost = "::1" if family == 6 else "127.0.0.0/8"
    head = [f"add table {t} {{ comment {_q('rules for kube-proxy')} ; }}", f"delete table {t}",
            f"add table {t} {{ comment {_q('rules for kube-proxy')} ; }}"]
    chains: list[str] = []
    rules: list[str] = []
    elements: list[str] = []
    sets = [
        f"add set {t} cluster-ips {{ type {addr} ; comment {_q('Active ClusterIPs')} ; }}",
        f"add map {t} no-endpoint-services {{ type {addr} . inet_proto . inet_service : verdict ; "
        f"comment {_q('vmap to drop or reject packets to services with no endpoints')} ; }}",
        f"add map {t} no-endpoint-nodeports {{ type inet_proto . inet_service : verdict ; "
        f"comment {_q('vmap to drop or reject packets to service nodeports with no endpoints')} ; }}",
        f"add map {t} firewall-ips {{ type {addr} . inet_proto . inet_service : verdict ; "
        f"comment {_q('destinations that are subject to LoadBalancerSourceRanges')} ; }}",
        f"add map {t} service-ips {{ type {addr} . inet_proto . inet_service : verdict ; "
        f"comment {_q('ClusterIP, ExternalIP and LoadBalancer IP traffic')} ; }}",
        f"add map {t} service-nodeports {{ type inet_proto . inet_service : verdict ; "
        f"comment {_q('NodePort traffic')} ; }}",
    ]
    for name, typ, hook, prio in BASE_CHAINS:
        chains.append(f"add chain {t} {name} {{ type {typ} hook {hook} priority {prio} ; }}")
    regular = ["nodeport-endpoints-check", "service-endpoints-check", "firewall-check", "services",
               "masquerading", "cluster-ips-check", "mark-for-masquerade"]
    chains += [f"add chain {t} {c}" for c in regular]
    chains.append(f"add chain {t} reject-chain {{ comment {_q('helper for @no-endpoint-services / @no-endpoint-nodeports')} ; }}")
    for dst, src, match in JUMP_CHAINS:
        rules.append(f"add rule {t} {src} {match + ' ' if match else ''}jump {dst}")
    rules += [
        f"add rule {t} mark-for-masquerade mark set mark or {MASQ_MARK}",
        f"add rule {t} masquerading mark and {MASQ_MARK} == 0 return",
        f"add rule {t} masquerading mark set mark xor {MASQ_MARK}",
        f"add rule {t} masquerading masquerade fully-random",
        f"add rule {t} cluster-ips-check {ipx} daddr @cluster-ips reject comment "
        f"{_q('Reject traffic to invalid ports of ClusterIPs')}",
        f"add rule {t} cluster-ips-check {ipx} daddr {{ {service_cidr} }} drop comment "
        f"{_q('Drop traffic to unallocated ClusterIPs')}",
        f"add rule {t} reject-chain reject",
        f"add rule {t} service-endpoints-check {ipx} daddr . meta l4proto . th dport vmap @no-endpoint-services",
        f"add rule {t} nodeport-endpoints-check {ipx} daddr != {no_localhost} meta l4proto . th dport "
        "vmap @no-endpoint-nodeports",
        f"add rule {t} firewall-check {ipx} daddr . meta l4proto . th dport vmap @firewall-ips",
        f"add rule {t} services {ipx} daddr . meta l4proto . th dport vmap @service-ips",
        f"add rule {t} services fib daddr type local {ipx} daddr != {no_localhost} meta l4proto . th dport "
        "vmap @service-nodeports",
    ]
    for sp in ports:
        _service(t, sp, cluster_cidr, chains, sets, rules, elements, ipx, addr)
    return "\n".join([*head, *sets, *chains, *rules, *elements]) + "\n"


def _service(t: str, sp: KPServicePort, cluster_cidr: str, chains: list[str], sets: list[str], rules: list[str],
             elements: list[str], ipx: str, addr: str) -> None:
    pl = plan(sp)
    cat = pl.cat
    p = sp.protocol
    svc, loc, ext = service_chain(sp), local_chain(sp), external_chain(sp)
    for ep in cat.reachable:
        chains.append(f"add chain {t} {endpoint_chain(sp, ep)}")
        if sp.affinity_seconds:
            sets.append(f"add set {t} {affinity_set(sp, ep)} {{ type {addr} ; flags dynamic,timeout ; "
                        f"timeout {sp.affinity_seconds}s ; }}")
    if pl.uses_cluster:
        chains.append(f"add chain {t} {svc}")
    if pl.uses_local:
        chains.append(f"add chain {t} {loc}")
    internal = loc if pl.internal_local else svc
    external_policy = loc if pl.external_local else svc
    has_internal, has_external, uses_ext = pl.has_internal, pl.has_external, pl.uses_external_chain
    if uses_ext:
        chains.append(f"add chain {t} {ext}")
    verdicts = {"reject": "goto reject-chain", "drop": "drop", "": ""}
    internal_verdict, external_verdict = verdicts[pl.internal_verdict], verdicts[pl.external_verdict]
    key = f"{sp.cluster_ip} . {p} . {sp.port}"
    elements.append(f"add element {t} cluster-ips {{ {sp.cluster_ip} }}")
    if has_internal:
        elements.append(f"add element {t} service-ips {{ {key} : goto {internal} }}")
    else:
        elements.append(f"add element {t} no-endpoint-services {{ {key} comment {_q(sp.name)} : {internal_verdict} }}")
    if sp.node_port:
        if cat.has_any:
            elements.append(f"add element {t} service-nodeports {{ {p} . {sp.node_port} : goto {ext} }}")
        if not has_external:
            elements.append(f"add element {t} no-endpoint-nodeports {{ {p} . {sp.node_port} comment {_q(sp.name)} : "
                            f"{external_verdict} }}")
    if has_internal:
        rules.append(f"add rule {t} {internal} {ipx} daddr {sp.cluster_ip} {p} dport {sp.port} "
                     f"{ipx} saddr != {cluster_cidr} jump mark-for-masquerade")
    if uses_ext:
        if not sp.external_local:
            rules.append(f"add rule {t} {ext} jump mark-for-masquerade")
        else:
            rules.append(f"add rule {t} {ext} {ipx} saddr {cluster_cidr} goto {svc} comment {_q('short-circuit pod traffic')}")
            rules.append(f"add rule {t} {ext} fib saddr type local jump mark-for-masquerade comment "
                         f"{_q('masquerade local traffic')}")
            rules.append(f"add rule {t} {ext} fib saddr type local goto {svc} comment {_q('short-circuit local traffic')}")
        if has_external:
            rules.append(f"add rule {t} {ext} goto {external_policy}")
    if pl.uses_cluster:
        rules.extend(_to_endpoints(t, sp, svc, cat.cluster, ipx))
    if pl.uses_local:
        rules.extend(_to_endpoints(t, sp, loc, cat.local, ipx))
    for ep in cat.reachable:
        chain = endpoint_chain(sp, ep)
        rules.append(f"add rule {t} {chain} {ipx} saddr {ep.ip} jump mark-for-masquerade")
        if sp.affinity_seconds:
            rules.append(f"add rule {t} {chain} update @{affinity_set(sp, ep)} {{ {ipx} saddr }}")
        rules.append(f"add rule {t} {chain} meta l4proto {p} dnat to {ep}")


def _to_endpoints(t: str, sp: KPServicePort, chain: str, endpoints: list[KPEndpoint], ipx: str) -> list[str]:
    rules = []
    if sp.affinity_seconds:
        for ep in endpoints:
            rules.append(f"add rule {t} {chain} {ipx} saddr @{affinity_set(sp, ep)} goto {endpoint_chain(sp, ep)}")
    vmap = ", ".join(f"{i} : goto {endpoint_chain(sp, ep)}" for i, ep in enumerate(endpoints))
    rules.append(f"add rule {t} {chain} numgen random mod {len(endpoints)} vmap {{ {vmap} }}")
    return rules
