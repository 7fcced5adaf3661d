"""Built-in plugin: the ``kernel`` datapath — per-pod /32 (IPv6: /128) routes and proxy-ARP
(IPv6: proxy neighbour discovery), no BPF.

The simplest correct datapath, used where BPF is unavailable and as the baseline the eBPF
datapath is benchmarked against. The kernel forwards between pod veths, so it turns on
``net.ipv4.ip_forward`` (and IPv6 forwarding) in the dataplane's network namespace.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from novanet_core import netlink
from novanet_core.backends import BackendContext, BackendRegistry, DatapathUnsupported
from novanet_core.hookspecs import hookimpl
from novanet_core.protocols import RTPROT_NOVANET
from novanet_core.types import Endpoint, RemoteEndpoint, ServiceBackend, ServiceFrontend

log = logging.getLogger(__name__)
RT_SCOPE_LINK = 253


def _sysctl(path: str, value: str, family: str = "ipv4") -> None:
    Path("/proc/sys/net", family, path).write_text(value)


NTF_PROXY = 0x08
AF_INET, AF_INET6 = 2, 10


def _plen(ip: str) -> int:
    return 128 if ":" in ip else 32


NO_POLICY = ("datapath kernel does not enforce NetworkPolicy (it forwards with kernel routes only); "
             "use datapath: ebpf to enforce it")


class KernelDatapath:
    """Implements no section: no policy, no flow events, no load-balancer (see the methods)."""

    name = "kernel"
    capabilities: frozenset[str] = frozenset()
    ip_families = (4, 6)

    def __init__(self, ctx: BackendContext):
        self.ctx = ctx
        self._lock = threading.Lock()
        self._meta: dict[str, dict[str, Any]] = {}
        self._remotes: dict[str, RemoteEndpoint] = {}
        self._service_backends = 0
        self.settings: dict[str, Any] = {}

    def start(self) -> None:
        _sysctl("ip_forward", "1")
        _sysctl("conf/all/forwarding", "1", "ipv6")

    def stop(self) -> None:
        return None  # routes are kernel state: they stay, traffic keeps flowing

    def configure(self, settings: dict[str, Any]) -> None:
        self.settings = dict(settings)
        gw = next((g for g in settings.get("gateways") or [settings.get("gateway")] if g and ":" not in g), None)
        if gw:
            # The gateway address on lo makes every host veth answer the pods' ARP for it
            # (arp_ignore=0), with no per-pod neighbour entries or proxy-ARP subnet routes.
            with netlink.IPRoute() as ipr:
                lo = ipr.link_lookup(ifname="lo")[0]
                have = {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=lo, family=2)}
                if gw not in have:
                    ipr.addr("add", index=lo, address=gw, prefixlen=32)

    def upsert_endpoint(self, endpoint: Endpoint) -> None:
        with self._lock, netlink.IPRoute() as ipr:
            idx = ipr.link_lookup(ifname=endpoint.host_ifname)
            if not idx:
                raise RuntimeError(f"host interface {endpoint.host_ifname} does not exist")
            _sysctl(f"conf/{endpoint.host_ifname}/proxy_arp", "1")
            _sysctl(f"conf/{endpoint.host_ifname}/rp_filter", "0")
            for ip, gw in zip(endpoint.ips, endpoint.gateways, strict=False):
                if ":" in ip:
                    # IPv6 has no proxy-ARP for a whole subnet: the veth answers the pod's
                    # neighbour solicitations for its gateway through one proxy entry.
                    _sysctl(f"conf/{endpoint.host_ifname}/proxy_ndp", "1", "ipv6")
                    ipr.neigh("replace", dst=gw, ifindex=idx[0], flags=NTF_PROXY, family=AF_INET6)
                ipr.route("replace", dst=f"{ip}/{_plen(ip)}", oif=idx[0], scope=RT_SCOPE_LINK, proto=RTPROT_NOVANET)
                self._meta[ip] = {"identity": endpoint.identity, "mac": endpoint.mac,
                                  "namespace": endpoint.namespace, "pod": endpoint.pod}

    def delete_endpoint(self, ip: str, host_ifname: str | None = None) -> None:
        with self._lock, netlink.IPRoute() as ipr:
            try:
                ipr.route("del", dst=f"{ip}/{_plen(ip)}", proto=RTPROT_NOVANET)
            except netlink.NetlinkError:
                pass  # already gone with its veth
            self._meta.pop(ip, None)

    def upsert_remote(self, remote: RemoteEndpoint) -> None:
        # Reaching other nodes is the tunnel or routing backend's job; the kernel datapath only
        # remembers remote identities for listing.
        self._remotes[remote.ip] = remote

    def delete_remote(self, ip: str) -> None:
        self._remotes.pop(ip, None)

    def list_endpoints(self) -> list[dict[str, Any]]:
        out = []
        with netlink.IPRoute() as ipr:
            names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
            routes = [*ipr.get_routes(family=AF_INET, proto=RTPROT_NOVANET),
                      *ipr.get_routes(family=AF_INET6, proto=RTPROT_NOVANET)]
            for r in routes:
                if r["dst_len"] != (32 if r["family"] == AF_INET else 128):
                    continue
                ip = r.get_attr("RTA_DST")
                oif = r.get_attr("RTA_OIF")
                meta = self._meta.get(ip, {})
                out.append({"ip": ip, "host_ifname": names.get(oif, "?"), "host_ifindex": oif,
                            "identity": meta.get("identity", 0), "mac": meta.get("mac", ""),
                            "node_ip": self.settings.get("nodeIP", ""), "local": True})
        for rem in self._remotes.values():
            out.append({"ip": rem.ip, "identity": rem.identity, "node_ip": rem.node_ip, "local": False,
                        "host_ifname": "", "host_ifindex": 0})
        return out

    # -- Policy: refused, never silently accepted. The agent reports it (``novanetctl status``,
    # ``policy.status``: supported false, with this reason) and pods are reachable unpoliced.
    def apply_policy(self, upserts: Any, deletes: Any = (), full: bool = False) -> dict[str, Any]:
        raise DatapathUnsupported(NO_POLICY)

    def list_policy(self) -> dict[str, Any]:
        raise DatapathUnsupported(NO_POLICY)

    # -- Services: this datapath has no load-balancer; kube-proxy (or another service proxy)
    # must translate. Its replies need nothing from us: every packet here crosses the kernel
    # stack, so conntrack reverses kube-proxy's DNAT on its own.
    def upsert_service(self, frontend: ServiceFrontend) -> None:
        raise DatapathUnsupported("datapath kernel has no service load-balancer: run kube-proxy and set "
                                  "kubeProxyReplacement: false")

    def delete_service(self, key: str) -> None:
        return None  # nothing was ever programmed

    def list_services(self) -> list[dict[str, Any]]:
        return []

    def set_service_backends(self, backends: list[ServiceBackend]) -> None:
        self._service_backends = len(backends)

    def status(self) -> dict[str, Any]:
        local = sum(1 for e in self.list_endpoints() if e["local"])
        return {"mode": "kernel-routes", "attachMode": "none", "endpoints": local, "policies": 0,
                "programs": [], "dropCounters": {}, "policy": {"enforced": False, "reason": NO_POLICY},
                "services": {"loadBalancer": False, "frontends": 0, "compatBackends": self._service_backends}}


@hookimpl
def novanet_register_backends(registry: BackendRegistry) -> None:
    registry.add("datapath", "kernel", KernelDatapath,
                 description="per-pod /32 kernel routes and proxy-ARP; no BPF, no policy enforcement")
