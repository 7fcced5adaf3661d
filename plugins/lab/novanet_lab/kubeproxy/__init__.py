"""kube-proxy emulation (``cluster.kubeProxy: iptables|nftables``): no kube-proxy binary runs here, so
the lab installs, in every node's netns, the rules kube-proxy would install from the lab's Services
and EndpointSlices, and re-syncs them after every change (``lab up``, ``apply``, ``delete``).

model.py     kube-proxy's view of service ports and endpoints
iptables.py  the iptables mode's chains (iptables-restore --noflush, as kube-proxy does)
nftables.py  the nftables mode's ``ip kube-proxy`` table (one nft -f transaction)

One proxier per IP family, as kube-proxy's meta proxier on a dual-stack node
(``pkg/proxy/metaproxier``, ``NewDualStackProxier`` in both modes): a family is synced when
serviceCIDR and clusterCIDR both have a range of it (kube-proxy's ``--cluster-cidr`` per family
for ``--detect-local-mode=ClusterCIDR``), IPv4 with iptables-restore / ``ip kube-proxy``, IPv6
with ip6tables-restore / ``ip6 kube-proxy``, each from its own family's ClusterIPs and
EndpointSlices.

Host setup a node needs for it (``setup_node``): a route for each family's serviceCIDR (a real
node's default route covers ClusterIPs, so that a host process's connect() gets as far as the nat
OUTPUT hook; a lab node has no default route), and ``route_localnet=1`` in iptables mode (kube-proxy
sets it for NodePorts on 127.0.0.1; IPv4 only, IPv6 has no localhost NodePorts).
"""

from __future__ import annotations

import subprocess
from typing import Any

from novanet_core import ipfamily
from novanet_core.state.model import ClusterState
from novanet_lab import netns
from novanet_lab.errors import LabError
from novanet_lab.kubeproxy import iptables, nftables
from novanet_lab.kubeproxy.model import KPServicePort, service_ports
from novanet_lab.state import LabState

MODES = ("none", "iptables", "nftables")


def mode_of(st: LabState) -> str:
    return str((st.spec.get("cluster") or {}).get("kubeProxy", "none"))


def _run(ns: str, argv: list[str], stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(["nsenter", f"--net={netns.NETNS_DIR / ns}", *argv], input=stdin, capture_output=True,
                       text=True)
    if check and r.returncode != 0:
        raise LabError(f"kube-proxy emulation: {' '.join(argv)} in {ns} failed: {r.stderr.strip()}")
    return r


def proxier_families(cluster: dict[str, Any]) -> list[tuple[int, str, str]]:
    """``(family, clusterCIDR range, serviceCIDR range)`` of every proxier this cluster runs,
    IPv4 first."""
    clusters = ipfamily.split(str(cluster.get("clusterCIDR", "10.42.0.0/16")))
    services = ipfamily.split(str(cluster.get("serviceCIDR", "10.96.0.0/12")))
    out = []
    for fam in (4, 6):
        cc, sc = ipfamily.pick(clusters, fam), ipfamily.pick(services, fam)
        if cc and sc:
            out.append((fam, cc, sc))
    return out


def setup_node(st: LabState, node: str) -> None:
    mode = mode_of(st)
    if mode == "none":
        return
    n = st.nodes[node]
    gateways = (st.underlay.gateways or [st.underlay.gateway]) if st.underlay else []
    for fam, _, service_cidr in proxier_families(st.spec.get("cluster") or {}):
        gw = ipfamily.pick(gateways, fam)
        if gw:
            _run(n.netns, ["ip", f"-{fam}", "route", "replace", service_cidr, "via", gw])
    if mode == "iptables":
        netns.set_sysctl(n.netns, "net.ipv4.conf.all.route_localnet", "1")


def sync(st: LabState, state: ClusterState) -> None:
    """Install the current rules of every family's proxier in every node (no-op with kubeProxy: none)."""
    mode = mode_of(st)
    if mode == "none":
        return
    for fam, cluster_cidr, service_cidr in proxier_families(st.spec.get("cluster") or {}):
        for n in st.nodes.values():
            install(n.netns, mode, service_ports(state, n.name, fam), cluster_cidr, service_cidr, fam)


def install(ns: str, mode: str, ports: list[KPServicePort], cluster_cidr: str, service_cidr: str,
            family: int = 4) -> None:
    """One full sync of ``mode``'s rules of ``family``'s proxier for ``ports`` (that family's) in
    netns ``ns`` (also bench/services.py's kube-proxy peer)."""
    if mode == "iptables":
        _sync_iptables(ns, ports, cluster_cidr, family)
    elif mode == "nftables":
        _run(ns, ["nft", "-f", "-"], nftables.render(ports, cluster_cidr, service_cidr, family))
    else:
        raise LabError(f"kube-proxy emulation: unknown mode {mode!r} (one of {', '.join(MODES[1:])})")


def _sync_iptables(ns: str, ports: list[KPServicePort], cluster_cidr: str, family: int) -> None:
    # kube-proxy ensures its chains and the jumps to them one by one (EnsureChain/EnsureRule,
    # prepended), then writes everything else in one iptables-restore --noflush. Jumps found in
    # iptables-save's output are not checked again (a miss is checked with -C before inserting).
    # The IPv6 proxier does the same with the ip6tables tools.
    tool = "ip6tables" if family == 6 else "iptables"
    saved = _run(ns, [f"{tool}-save"]).stdout
    for table, chain, src, comment, extra in iptables.JUMP_CHAINS:
        rule = iptables.jump_rule(table, chain, src, comment, extra)
        line = " ".join(["-A", src, *(f'"{a}"' if " " in a else a for a in rule[2:])])
        if line in saved:
            continue
        _run(ns, [tool, "-w", "-t", table, "-N", chain], check=False)
        if _run(ns, [tool, "-w", *rule[:2], "-C", src, *rule[2:]], check=False).returncode != 0:
            _run(ns, [tool, "-w", *rule[:2], "-I", src, *rule[2:]])
    nat = saved.split("*nat\n", 1)[1].split("COMMIT\n", 1)[0] if "*nat\n" in saved else ""
    existing = [line[1:].split()[0] for line in nat.splitlines() if line.startswith(":KUBE-")]
    text = iptables.render(ports, cluster_cidr, family)
    active = {line[1:].split()[0] for line in text.splitlines() if line.startswith(":")}
    stale = [c for c in existing if c.startswith(iptables.SERVICE_CHAIN_PREFIXES) and c not in active]
    if stale:
        # Flushed by their chain line, then deleted, after the rules that referred to them are gone.
        head, commit = text.rsplit("COMMIT\n", 1)[0], "COMMIT\n"
        text = head.replace("*nat\n", "*nat\n" + "".join(f":{c} - [0:0]\n" for c in stale), 1)
        text += "".join(f"-X {c}\n" for c in stale) + commit
    _run(ns, [f"{tool}-restore", "-w", "--noflush"], text)
