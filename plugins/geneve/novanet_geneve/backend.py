"""The ``geneve`` tunnel backend (lives in the agent; its programs outlive it, pinned).

Per remote node it keeps two map entries (the node's ``nv_<nodename>`` state): the shared
``tunnels`` entry (underlay ifindex, node IP, VNI) the datapath checks before its tail call, and
this plugin's ``geneve_nodes`` entry (underlay next hop, the node's PodCIDR for the trust check).
It also installs one kernel route per remote PodCIDR via the underlay with the tunnel MTU: the node's
own traffic to remote pods (not encapsulated; it arrives as plain IP on the remote node) and the
ICMP frag-needed answer for an oversized DF packet the encap program hands back to the stack.
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import logging
import os
import socket
import threading
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from novanet_core.backends import BackendContext, ConfigError
from novanet_core.bpf import bpffs, layouts_c, syscall
from novanet_core.bpf.layouts import TunnelKey, TunnelValue
from novanet_core.protocols import RTPROT_NOVANET
from novanet_core.types import NodeInfo
from novanet_geneve import layouts, program, wire

log = logging.getLogger(__name__)


def _num(ip: str) -> int:
    return int(ipaddress.IPv4Address(ip))


def tunnel_name(node: str) -> str:
    """The guide's per-node name for Geneve state (no kernel link carries it; see docs/overlay.md)."""
    return f"nv_{node}"


class GeneveTunnel:
    name = "geneve"
    overhead = wire.OVERHEAD

    def __init__(self, ctx: BackendContext):
        cfg = ctx.config
        if cfg.datapath == "kernel":
            raise ConfigError("tunnelProtocol: 'geneve' is done by BPF programs behind the datapath's tunnel hook; "
                              "datapath 'kernel' has no such hook (use datapath: ebpf, or tunnelProtocol: vxlan)")
        self.ctx = ctx
        self.root = cfg.bpf.root
        self.vni = int(cfg.pluginSettings.get("geneve", {}).get("vni", wire.VNI))
        if not 0 < self.vni < 1 << 24:
            raise ConfigError(f"pluginSettings.geneve.vni: {self.vni} is outside 1..16777215")
        self._lock = threading.Lock()
        self.local: NodeInfo | None = None
        self.remotes: list[NodeInfo] = []
        self.underlay = ""
        self.underlay_ifindex = 0
        self.underlay_mtu = 0
        self.nexthops: dict[str, str] = {}
        self.installed: dict[str, Any] = {}

    # ------------------------------------------------------------------ lifecycle
    def _resolve_underlay(self, local: NodeInfo) -> None:
        from novanet_core.agent.podnet import interface_for_ip, interface_mtu

        dev = self.ctx.config.underlayInterface or interface_for_ip(local.ip)
        if not dev:
            raise ConfigError(f"underlayInterface: not set and no interface holds the node IP {local.ip}")
        try:
            self.underlay_ifindex = socket.if_nametoindex(dev)
        except OSError:
            raise ConfigError(f"underlayInterface: {dev!r} does not exist") from None
        self.underlay = dev
        self.underlay_mtu = interface_mtu(dev) or 1500

    def setup(self, local: NodeInfo) -> None:
        self.local = local
        self._resolve_underlay(local)
        if self.root.startswith(bpffs.BPFFS):
            bpffs.ensure_mounted()
        bpffs.ensure_dir(self.root)
        os.makedirs(os.path.join(self.root, "maps"), exist_ok=True)
        loaded = program.load(self.root, self.ctx.config.bpf.headerTree)
        try:
            self.installed = program.install(self.root, loaded, self.underlay, self.underlay_ifindex)
        finally:
            loaded.close()  # the slot, the pinned link and the pins hold the programs now
        log.info("geneve: programs installed (underlay %s ifindex %d mtu %d, pod MTU %d): %s", self.underlay,
                 self.underlay_ifindex, self.underlay_mtu, self.underlay_mtu - self.overhead, self.installed)

    def teardown(self) -> None:
        with self._lock:
            self._sync([])
            program.uninstall(self.root)

    # ------------------------------------------------------------------ nodes
    def sync_nodes(self, local: NodeInfo, remotes: list[NodeInfo]) -> None:
        with self._lock:
            self._sync(remotes)

    def _nexthop(self, ipr: IPRoute, node_ip: str) -> str:
        try:
            r = ipr.route("get", dst=node_ip)[0]
        except NetlinkError:
            return node_ip
        return r.get_attr("RTA_GATEWAY") or node_ip

    def _sync(self, remotes: list[NodeInfo]) -> None:
        want = {n.ip: n for n in remotes}
        tfd = syscall.obj_get(layouts_c.pin_path(self.root, "tunnels"))
        nfd = syscall.obj_get(layouts.pin_path(self.root, "geneve_nodes"))
        try:
            with IPRoute() as ipr:
                # entries first (the datapath only tail-calls with one), then the routes
                for ip, n in want.items():
                    nh = self._nexthop(ipr, ip)
                    self.nexthops[ip] = nh
                    net = ipaddress.IPv4Network(n.pod_cidr)
                    nv = layouts.NodeValue(nexthop=_num(nh), pod_cidr=int(net.network_address),
                                           pod_cidr_len=net.prefixlen)
                    syscall.map_update(nfd, bytes(layouts.NodeKey(node_ip=_num(ip))), bytes(nv))
                    tv = TunnelValue(ifindex=self.underlay_ifindex, remote_ip=_num(ip), vni=self.vni)
                    syscall.map_update(tfd, bytes(TunnelKey(node_ip=_num(ip))), bytes(tv))
                for k in list(syscall.map_keys(tfd, ctypes.sizeof(TunnelKey))):
                    ip = str(ipaddress.IPv4Address(TunnelKey.from_buffer_copy(k).node_ip))
                    if ip not in want:
                        syscall.map_delete(tfd, k)
                        syscall.map_delete(nfd, k)
                        self.nexthops.pop(ip, None)
                self._sync_routes(ipr, want)
        finally:
            os.close(tfd)
            os.close(nfd)
        self.remotes = sorted(remotes, key=lambda n: n.name)

    def _sync_routes(self, ipr: IPRoute, want: dict[str, NodeInfo]) -> None:
        mtu = self.underlay_mtu - self.overhead
        have = {f"{r.get_attr('RTA_DST')}/{r['dst_len']}" for r in ipr.get_routes(family=2, proto=RTPROT_NOVANET)
                if r["dst_len"] < 32}
        wanted = {n.pod_cidr: ip for ip, n in want.items()}
        for cidr in have - set(wanted):
            try:
                ipr.route("del", dst=cidr, proto=RTPROT_NOVANET)
            except NetlinkError as e:
                if e.code != errno.ESRCH:
                    log.warning("geneve: removing route %s failed: %s", cidr, e)
        for cidr, ip in wanted.items():
            try:
                ipr.route("replace", dst=cidr, gateway=self.nexthops.get(ip, ip), oif=self.underlay_ifindex,
                          proto=RTPROT_NOVANET, metrics={"mtu": mtu})
            except NetlinkError as e:
                log.error("geneve: route %s via %s failed: %s", cidr, ip, e)

    # ------------------------------------------------------------------ inspection
    def status(self) -> list[dict[str, Any]]:
        return [{"node": n.name, "nodeIP": n.ip, "podCIDR": n.pod_cidr, "interface": self.underlay,
                 "ifindex": self.underlay_ifindex, "protocol": "geneve", "tunnel": tunnel_name(n.name),
                 "vni": self.vni, "port": wire.PORT, "nexthop": self.nexthops.get(n.ip, n.ip),
                 "overhead": self.overhead} for n in self.remotes]

    def counters(self) -> dict[str, Any]:
        return {"underlay": self.underlay, "ifindex": self.underlay_ifindex, "underlayMTU": self.underlay_mtu,
                "podMTU": self.underlay_mtu - self.overhead, "overhead": self.overhead, "vni": self.vni,
                "programs": self.installed, "counters": program.stats(self.root)}
