"""The rules kube-proxy's iptables mode installs, written from the lab's Services.

Shapes, chain names and order follow kube-proxy's ``pkg/proxy/iptables/proxier.go``
(``syncProxyRules``, ``writeServiceToEndpointRules``, ``iptablesJumpChains``) with its defaults:
masquerade bit 14 (mark 0x4000), ``--detect-local-mode=ClusterCIDR``, every local address
accepting NodePorts, ``localhostNodePorts`` on, ``nf_conntrack_tcp_be_liberal`` off:

  PREROUTING, OUTPUT (nat)  -> KUBE-SERVICES
  KUBE-SERVICES   -d ClusterIP --dport port -> KUBE-SVC-<hash> | KUBE-SVL-<hash>  (internal policy)
                  last: -m addrtype --dst-type LOCAL -> KUBE-NODEPORTS
  KUBE-NODEPORTS  --dport nodePort -> KUBE-EXT-<hash> -> KUBE-MARK-MASQ (Cluster) -> KUBE-SVC/SVL
  KUBE-SVC-*      ! -s clusterCIDR -> KUBE-MARK-MASQ; ClientIP affinity (-m recent --rcheck);
                  one rule per endpoint, -m statistic --mode random --probability 1/(n-i), the last unconditional
  KUBE-SEP-*      -s endpoint -> KUBE-MARK-MASQ (hairpin); [-m recent --set]; DNAT --to-destination ip:port
  POSTROUTING     -> KUBE-POSTROUTING: marked packets MASQUERADE --random-fully
  filter          KUBE-SERVICES / KUBE-EXTERNAL-SERVICES REJECT (no endpoints) or DROP (no local
                  endpoints); KUBE-FORWARD accepts marked and established traffic; KUBE-FIREWALL
                  drops martian 127/8.

The IPv6 proxier (``ip6tables-restore``) writes the same chains with that family's ClusterIPs,
endpoints (``[ip]:port``) and clusterCIDR, less what only IPv4 has: no ``block incoming localnet
connections`` rule (KUBE-FIREWALL is ensured and jumped to, but left empty: localhost NodePorts
need ``route_localnet``, which IPv6 has not), and the NodePort tail rule excludes ``::1/128``.

Chain names are kube-proxy's: ``KUBE-SVC-`` + the first 16 base32 characters of
sha256(servicePortName + protocol), ``KUBE-SEP-`` the same over servicePortName + protocol + "ip:port".
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable

from novanet_lab.kubeproxy.model import KPEndpoint, KPServicePort, plan

MASQ_MARK = "0x4000"
LARGE_CLUSTER_ENDPOINTS = 1000  # above this, per-endpoint comments are left out (kube-proxy's largeClusterMode)

# (table, chain kube-proxy owns, built-in chain that jumps to it, comment, extra match) in kube-proxy's order.
JUMP_CHAINS = [
    ("filter", "KUBE-EXTERNAL-SERVICES", "INPUT", "kubernetes externally-visible service portals",
     ["-m", "conntrack", "--ctstate", "NEW"]),
    ("filter", "KUBE-EXTERNAL-SERVICES", "FORWARD", "kubernetes externally-visible service portals",
     ["-m", "conntrack", "--ctstate", "NEW"]),
    ("filter", "KUBE-NODEPORTS", "INPUT", "kubernetes health check service ports", []),
    ("filter", "KUBE-SERVICES", "FORWARD", "kubernetes service portals", ["-m", "conntrack", "--ctstate", "NEW"]),
    ("filter", "KUBE-SERVICES", "OUTPUT", "kubernetes service portals", ["-m", "conntrack", "--ctstate", "NEW"]),
    ("filter", "KUBE-FORWARD", "FORWARD", "kubernetes forwarding rules", []),
    ("filter", "KUBE-PROXY-FIREWALL", "INPUT", "kubernetes load balancer firewall", ["-m", "conntrack", "--ctstate", "NEW"]),
    ("filter", "KUBE-PROXY-FIREWALL", "OUTPUT", "kubernetes load balancer firewall", ["-m", "conntrack", "--ctstate", "NEW"]),
    ("filter", "KUBE-PROXY-FIREWALL", "FORWARD", "kubernetes load balancer firewall", ["-m", "conntrack", "--ctstate", "NEW"]),
    ("nat", "KUBE-SERVICES", "OUTPUT", "kubernetes service portals", []),
    ("nat", "KUBE-SERVICES", "PREROUTING", "kubernetes service portals", []),
    ("nat", "KUBE-POSTROUTING", "POSTROUTING", "kubernetes postrouting rules", []),
    # kubelet's duplicate, which kube-proxy also ensures
    ("filter", "KUBE-FIREWALL", "INPUT", "", []),
    ("filter", "KUBE-FIREWALL", "OUTPUT", "", []),
]
SERVICE_CHAIN_PREFIXES = ("KUBE-SVC-", "KUBE-SVL-", "KUBE-EXT-", "KUBE-FW-", "KUBE-SEP-")


def _hash(text: str) -> str:
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:16]


def svc_chain(sp: KPServicePort) -> str:
    return "KUBE-SVC-" + _hash(sp.name + sp.protocol)


def svl_chain(sp: KPServicePort) -> str:
    return "KUBE-SVL-" + _hash(sp.name + sp.protocol)


def ext_chain(sp: KPServicePort) -> str:
    return "KUBE-EXT-" + _hash(sp.name + sp.protocol)


def sep_chain(sp: KPServicePort, ep: KPEndpoint) -> str:
    return "KUBE-SEP-" + _hash(sp.name + sp.protocol + str(ep))


def probability(n: int) -> str:
    return f"{1.0 / n:0.10f}"


def jump_rule(table: str, chain: str, src: str, comment: str, extra: list[str]) -> list[str]:
    """``iptables -t TABLE -I SRC ...`` arguments (kube-proxy prepends with EnsureRule)."""
    args = [*extra]
    if comment:
        args += ["-m", "comment", "--comment", comment]
    return ["-t", table, *args, "-j", chain]


def _q(text: str) -> str:
    # kube-proxy quotes a comment in the restore input only when it holds spaces.
    return f'"{text}"' if " " in text else text


def render(ports: list[KPServicePort], cluster_cidr: str, family: int = 4) -> str:
    """The iptables-restore input of one full kube-proxy sync of ``family``'s proxier (applied
    with --noflush, by ``ip6tables-restore`` for 6)."""
    filter_chains = ["KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-FORWARD", "KUBE-NODEPORTS",
                     "KUBE-PROXY-FIREWALL"]
    nat_chains = ["KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ"]
    fr: list[str] = []
    if family == 4:  # localhostNodePorts' mitigation, written by the IPv4 proxier only
        filter_chains.append("KUBE-FIREWALL")
        fr.append(f"-A KUBE-FIREWALL -m comment --comment {_q('block incoming localnet connections')} "
                  "-d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP")
    nr: list[str] = [
        f"-A KUBE-POSTROUTING -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN",
        f"-A KUBE-POSTROUTING -j MARK --xor-mark {MASQ_MARK}",
        f"-A KUBE-POSTROUTING -m comment --comment {_q('kubernetes service traffic requiring SNAT')} "
        "-j MASQUERADE --random-fully",
        f"-A KUBE-MARK-MASQ -j MARK --or-mark {MASQ_MARK}",
    ]
    large = sum(len(sp.endpoints) for sp in ports) > LARGE_CLUSTER_ENDPOINTS

    def comment(text: str) -> str:
        return "" if large else f" -m comment --comment {_q(text)}"

    for sp in ports:
        f, n, chains = _port_rules(sp, cluster_cidr, comment)
        fr.extend(f)
        nr.extend(n)
        nat_chains.extend(chains)
    # Anything not caught above and addressed to this node is a NodePort candidate; last rule.
    nr.append(f"-A KUBE-SERVICES -m comment --comment "
              f"{_q('kubernetes service nodeports; NOTE: this must be the last rule in this chain')} "
              f"-m addrtype --dst-type LOCAL{' ! -d ::1/128' if family == 6 else ''} -j KUBE-NODEPORTS")
    fr.append("-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP")
    fr.append(f"-A KUBE-FORWARD -m comment --comment {_q('kubernetes forwarding rules')} "
              f"-m mark --mark {MASQ_MARK}/{MASQ_MARK} -j ACCEPT")
    fr.append(f"-A KUBE-FORWARD -m comment --comment {_q('kubernetes forwarding conntrack rule')} "
              "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT")
    out = ["*filter", *(f":{c} - [0:0]" for c in filter_chains), *fr, "COMMIT",
           "*nat", *(f":{c} - [0:0]" for c in dict.fromkeys(nat_chains)), *nr, "COMMIT"]
    return "\n".join(out) + "\n"


def _port_rules(sp: KPServicePort, cluster_cidr: str,
                comment: Callable[[str], str]) -> tuple[list[str], list[str], list[str]]:
    """One service port's filter rules, nat rules and the nat chains they jump to."""
    fr: list[str] = []
    nr: list[str] = []
    chains: list[str] = []
    pl = plan(sp)
    cat = pl.cat
    p, name = sp.protocol, sp.name
    svc, svl, ext = svc_chain(sp), svl_chain(sp), ext_chain(sp)
    internal_chain = svl if pl.internal_local else svc
    external_policy = svl if pl.external_local else svc
    dst = f"-m {p} -p {p} -d {sp.cluster_ip} --dport {sp.port}"
    why = f"{name} has no {'local ' if cat.has_any else ''}endpoints"
    internal_verdict, external_verdict = pl.internal_verdict.upper(), pl.external_verdict.upper()
    has_internal, has_external = pl.has_internal, pl.has_external
    if has_internal:
        nr.append(f"-A KUBE-SERVICES -m comment --comment {_q(name + ' cluster IP')} {dst} -j {internal_chain}")
    else:
        fr.append(f"-A KUBE-SERVICES -m comment --comment {_q(why)} {dst} -j {internal_verdict}")
    if sp.node_port:
        if cat.has_any:
            nr.append(f"-A KUBE-NODEPORTS -m comment --comment {name} -m {p} -p {p} --dport {sp.node_port} "
                      f"-j {ext}")
        if not has_external:
            fr.append(f"-A KUBE-EXTERNAL-SERVICES -m comment --comment {_q(why)} -m addrtype --dst-type LOCAL "
                      f"-m {p} -p {p} --dport {sp.node_port} -j {external_verdict}")
    if has_internal:
        # Off-cluster sources reaching a ClusterIP are masqueraded (--detect-local-mode=ClusterCIDR).
        nr.append(f"-A {internal_chain} -m comment --comment {_q(name + ' cluster IP')} {dst} "
                  f"! -s {cluster_cidr} -j KUBE-MARK-MASQ")
    if pl.uses_external_chain:
        chains.append(ext)
        nr.extend(_external_chain(sp, ext, svc, external_policy if has_external else None, cluster_cidr))
    if pl.uses_cluster:
        chains.append(svc)
        nr.extend(_to_endpoints(sp, svc, cat.cluster, comment))
    if pl.uses_local:
        chains.append(svl)
        nr.extend(_to_endpoints(sp, svl, cat.local, comment))
    for ep in cat.reachable:
        sep = sep_chain(sp, ep)
        chains.append(sep)
        c = comment(name)
        nr.append(f"-A {sep}{c} -s {ep.ip} -j KUBE-MARK-MASQ")
        recent = f" -m recent --name {sep} --set" if sp.affinity_seconds else ""
        nr.append(f"-A {sep}{c}{recent} -m {p} -p {p} -j DNAT --to-destination {ep}")
    return fr, nr, chains

def _external_chain(sp: KPServicePort, ext: str, svc: str, policy_chain: str | None, cluster_cidr: str) -> list[str]:
    """The KUBE-EXT chain of a port reached from outside (NodePort): who is masqueraded, and
    (``policy_chain``, when the port has external endpoints) where it goes on to."""
    name = sp.name
    if not sp.external_local:
        nr = [f"-A {ext} -m comment --comment {_q(f'masquerade traffic for {name} external destinations')} "
              "-j KUBE-MARK-MASQ"]
    else:
        nr = [f"-A {ext} -m comment --comment {_q(f'pod traffic for {name} external destinations')} "
              f"-s {cluster_cidr} -j {svc}",
              f"-A {ext} -m comment --comment {_q(f'masquerade LOCAL traffic for {name} external destinations')} "
              "-m addrtype --src-type LOCAL -j KUBE-MARK-MASQ",
              f"-A {ext} -m comment --comment {_q(f'route LOCAL traffic for {name} external destinations')} "
              f"-m addrtype --src-type LOCAL -j {svc}"]
    if policy_chain is not None:
        nr.append(f"-A {ext} -j {policy_chain}")
    return nr

def _to_endpoints(sp: KPServicePort, chain: str, endpoints: list[KPEndpoint], comment) -> list[str]:  # type: ignore[no-untyped-def]
    rules = []
    if sp.affinity_seconds:
        for ep in endpoints:
            sep = sep_chain(sp, ep)
            rules.append(f"-A {chain}{comment(f'{sp.name} -> {ep}')} -m recent --name {sep} --rcheck "
                         f"--seconds {sp.affinity_seconds} --reap -j {sep}")
    n = len(endpoints)
    for i, ep in enumerate(endpoints):
        stat = f" -m statistic --mode random --probability {probability(n - i)}" if i < n - 1 else ""
        rules.append(f"-A {chain}{comment(f'{sp.name} -> {ep}')}{stat} -j {sep_chain(sp, ep)}")
    return rules
