"""kube-proxy emulation (``cluster.kubeProxy: iptables|nftables``): no kube-proxy binary runs here, so
the lab installs, in every node's netns, the rules kube-proxy would install from the lab's Services
and EndpointSlices, and re-syncs them after every change (``lab up``, ``apply``, ``delete``).

model.py     kube-proxy's view of service ports and endpoints
iptables.py  the iptables mode's chains (iptables-restore --noflush, as kube-proxy does)
nftables.py  the nftables mode's ``ip kube-proxy`` table (one nft -f transaction)

Host setup a node needs for it (``setup_node``): a route for serviceCIDR (a real node's default
route covers ClusterIPs, so that a host process's connect() gets as far as the nat OUTPUT hook;
a lab node has no default route), and ``route_localnet=1`` in iptables mode (kube-proxy sets it
for NodePorts on 127.0.0.1).
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


def _ipv4_service_cidr(cluster: dict[str, Any]) -> str | None:
    """The IPv4 range of serviceCIDR: the rule shapes emulated here are kube-proxy's IPv4 ones."""
    return ipfamily.pick(ipfamily.split(str(cluster.get("serviceCIDR", "10.96.0.0/12"))), 4)


def setup_node(st: LabState, node: str) -> None:
    mode = mode_of(st)
    if mode == "none":
        return
    n = st.nodes[node]
    service_cidr = _ipv4_service_cidr(st.spec.get("cluster") or {})
    gw = st.underlay.gateway if st.underlay else None
    if gw and service_cidr:
        _run(n.netns, ["ip", "route", "replace", service_cidr, "via", gw])
    if mode == "iptables":
        netns.set_sysctl(n.netns, "net.ipv4.conf.all.route_localnet", "1")


def sync(st: LabState, state: ClusterState) -> None:
    """Install the current rules in every node (no-op with kubeProxy: none)."""
    mode = mode_of(st)
    if mode == "none":
        return
    cluster = st.spec.get("cluster") or {}
    cluster_cidr = cluster.get("clusterCIDR", "10.42.0.0/16")
    service_cidr = _ipv4_service_cidr(cluster)
    if service_cidr is None:
        return
    for n in st.nodes.values():
        install(n.netns, mode, service_ports(state, n.name), cluster_cidr, service_cidr)


def install(ns: str, mode: str, ports: list[KPServicePort], cluster_cidr: str, service_cidr: str) -> None:
    """One full sync of ``mode``'s rules for ``ports`` in netns ``ns`` (also bench/services.py's
    kube-proxy peer)."""
    if mode == "iptables":
        _sync_iptables(ns, ports, cluster_cidr)
    elif mode == "nftables":
        _run(ns, ["nft", "-f", "-"], nftables.render(ports, cluster_cidr, service_cidr))
    else:
        raise LabError(f"kube-proxy emulation: unknown mode {mode!r} (one of {', '.join(MODES[1:])})")


def _sync_iptables(ns: str, ports: list[KPServicePort], cluster_cidr: str) -> None:
    # kube-proxy ensures its chains and the jumps to them one by one (EnsureChain/EnsureRule,
    # prepended), then writes everything else in one iptables-restore --noflush. Jumps found in
    # iptables-save's output are not checked again (a miss is checked with -C before inserting).
    saved = _run(ns, ["iptables-save"]).stdout
    for table, chain, src, comment, extra in iptables.JUMP_CHAINS:
        rule = iptables.jump_rule(table, chain, src, comment, extra)
        line = " ".join(["-A", src, *(f'"{a}"' if " " in a else a for a in rule[2:])])
        if line in saved:
            continue
        _run(ns, ["iptables", "-w", "-t", table, "-N", chain], check=False)
        if _run(ns, ["iptables", "-w", *rule[:2], "-C", src, *rule[2:]], check=False).returncode != 0:
            _run(ns, ["iptables", "-w", *rule[:2], "-I", src, *rule[2:]])
    nat = saved.split("*nat\n", 1)[1].split("COMMIT\n", 1)[0] if "*nat\n" in saved else ""
    existing = [line[1:].split()[0] for line in nat.splitlines() if line.startswith(":KUBE-")]
    text = iptables.render(ports, cluster_cidr)
    active = {line[1:].split()[0] for line in text.splitlines() if line.startswith(":")}
    stale = [c for c in existing if c.startswith(iptables.SERVICE_CHAIN_PREFIXES) and c not in active]
    if stale:
        # Flushed by their chain line, then deleted, after the rules that referred to them are gone.
        head, commit = text.rsplit("COMMIT\n", 1)[0], "COMMIT\n"
        text = head.replace("*nat\n", "*nat\n" + "".join(f":{c} - [0:0]\n" for c in stale), 1)
        text += "".join(f"-X {c}\n" for c in stale) + commit
    _run(ns, ["iptables-restore", "-w", "--noflush"], text)
