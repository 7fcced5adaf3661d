"""The ``ebpf`` datapath backend (runs in the novanet-dataplane process, in the node netns)."""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import logging
import os
import socket
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from novanet_core import ipfamily
from novanet_core.backends import BackendContext, ConfigError
from novanet_core.bpf import bpffs, pinned, stats, syscall
from novanet_core.bpf.compiler import Programs
from novanet_core.policy import EndpointPolicy
from novanet_core.protocols import RTPROT_NOVANET, protocol_number
from novanet_core.types import Endpoint, RemoteEndpoint, ServiceBackend, ServiceFrontend
from novanet_ebpf_policy import flowtable
from novanet_ebpf_policy import maps as mapsmod
from novanet_ebpf_policy import program as progmod
from novanet_ebpf_policy.attach import TcAttacher, TcxAttacher, tcx_supported
from novanet_ebpf_policy.egressmap import VALUE as EGRESS_VALUE
from novanet_ebpf_policy.egressmap import EgressEntry, EgressProgrammer, compile_egress
from novanet_ebpf_policy.export import FlowExporter
from novanet_ebpf_policy.flowfilter import FlowFilter, raw_ip
from novanet_ebpf_policy.flows import FlowCollector
from novanet_ebpf_policy.layouts import (
    Action,
    ConfigKey,
    EgressAction,
    EgressFlag,
    Endpoint6Key,
    EndpointFlag,
    EndpointKey,
    EndpointValue,
    Flow6Key,
    PolicyKey,
    PolicyValue,
    node_key,
)
from novanet_ebpf_policy.pinwatch import PinWatch
from novanet_ebpf_policy.policymap import PolicyProgrammer, describe_entry
from novanet_ebpf_policy.policyretry import PolicyRetry
from novanet_ebpf_policy.services import ServiceProgrammer, ensure_sctp_crc
from novanet_ebpf_policy.services import configure_size as services_configure_size
from novanet_ebpf_policy.svcattach import ServiceAttacher, resolve_cgroup_root

log = logging.getLogger(__name__)


def _ensure_ip_forwarding() -> None:
    """A bandwidth-limited pod's packets are forwarded by the node's stack (EndpointFlag.SHAPED), which
    the programs otherwise never need: turn IPv4 forwarding on in this (the node's) netns."""
    path = Path("/proc/sys/net/ipv4/ip_forward")
    if path.read_text().strip() != "1":
        path.write_text("1")
        log.info("net.ipv4.ip_forward set to 1: a bandwidth-limited pod's traffic is forwarded by the stack")




def _snat_address(node_ip: object) -> str:
    """The node's IPv4 address, the one masquerade rewrites to (the egress map's snat_ip is IPv4);
    "" for a node with IPv6 addresses only. ``nodeIP`` may be dual-stack (``v4,v6``, either first)."""
    return ipfamily.pick(ipfamily.split(str(node_ip or "")), 4) or ""

class DatapathError(RuntimeError):
    """A datapath operation failed; the message names the object and field."""


def ip_num(value: Any, field: str) -> int:
    packed = ipfamily.ipv4_packed(value)  # once or twice per remote pod of a full sync: not ipaddress
    if packed is None:
        raise ConfigError(f"{field}: {value!r} is not an IPv4 address")
    return int.from_bytes(packed, "big")


def ip6_bytes(value: Any, field: str) -> bytes:
    try:
        return ipaddress.IPv6Address(str(value)).packed
    except ValueError:
        raise ConfigError(f"{field}: {value!r} is not an IPv6 address") from None


def endpoint_key(ip: str, field: str) -> tuple[str, EndpointKey | Endpoint6Key]:
    """The endpoint map of ``ip``'s family and its key there."""
    if ":" in str(ip):
        return "endpoints_v6", Endpoint6Key.from_buffer_copy(ip6_bytes(ip, field))
    return "endpoints", EndpointKey(ip=ip_num(ip, field))


def ip6_config_words(value: Any, field: str) -> tuple[int, int]:
    """An IPv6 address as the two CONFIG slots the programs compare (bytes 0-7 and 8-15, native)."""
    b = ip6_bytes(value, field)
    return int.from_bytes(b[:8], "little"), int.from_bytes(b[8:], "little")


def mac_bytes(value: Any, field: str) -> bytes:
    try:
        b = bytes.fromhex(str(value).replace(":", "").replace("-", ""))
    except ValueError:
        b = b""
    if len(b) != 6:
        raise ConfigError(f"{field}: {value!r} is not a MAC address")
    return b


def mac_str(b: Any) -> str:
    return ":".join(f"{x:02x}" for x in bytes(b))


def _int(params: dict[str, Any], key: str, default: int, lo: int, hi: int) -> int:
    v = params.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int | str):
        raise ConfigError(f"{key}: {v!r} is not an integer")
    try:
        n = int(v)
    except ValueError:
        raise ConfigError(f"{key}: {v!r} is not an integer") from None
    if not lo <= n <= hi:
        raise ConfigError(f"{key}: {n} is outside {lo}..{hi}")
    return n


def family_settings(s: dict[str, Any], family: int) -> dict[str, Any]:
    """``dp.configure`` settings with each single address/CIDR key set to its ``family`` entry of
    the list key (dropped when the node has none of that family)."""
    out = dict(s)
    for single, many in (("nodeIP", "nodeIPs"), ("podCIDR", "podCIDRs"), ("clusterCIDR", "clusterCIDRs"),
                         ("gateway", "gateways"), ("serviceCIDR", "serviceCIDRs")):
        # The config file's single keys may hold both families (``a,b``).
        values = s.get(many) or ipfamily.split(s.get(single))
        out.pop(single, None)
        pick = ipfamily.pick(values, family)
        if pick:
            out[single] = pick
    return out


def _node_address(m: mapsmod.MapHandles) -> str | None:
    """The node's IPv4 address from CONFIG, else its IPv6 one (an IPv6-only node): the address
    whose interface is the underlay, where nv_from_underlay serves NodePorts of both families."""
    v4 = m.config_get(ConfigKey.NODE_IP)
    if v4:
        return str(ipaddress.IPv4Address(v4))
    hi, lo = m.config_get(ConfigKey.NODE_IP6_HI), m.config_get(ConfigKey.NODE_IP6_LO)
    if not (hi or lo):
        return None
    return str(ipaddress.IPv6Address(hi.to_bytes(8, "little") + lo.to_bytes(8, "little")))


def _interface_holding(ip: str) -> str | None:
    """The interface that holds ``ip``: the dataplane is told the node IP (``configure``), not the
    agent's underlay facts, so it looks the interface up itself."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        for a in ipr.get_addr(family=socket.AF_INET6 if ":" in ip else socket.AF_INET):
            if a.get_attr("IFA_ADDRESS") != ip:
                continue
            links = ipr.get_links(a["index"])
            return links[0].get_attr("IFLA_IFNAME") if links else None
    return None


class EbpfDatapath:
    name = "ebpf"
    capabilities = frozenset({"policy", "flows", "prewarm", "stats", "service"})
    # IPv6 (bpf/datapath6.c): endpoints, neighbour discovery, same-node redirect, flow table and
    # NetworkPolicy; a remote IPv6 pod goes to the tunnel plugin in overlay mode, as IPv4 does.
    ip_families = (4, 6)

    def __init__(self, ctx: BackendContext):
        cfg = ctx.config
        self.ctx = ctx
        self.root = cfg.bpf.root
        self.header_tree = cfg.bpf.headerTree
        self._node_ips: dict[int, str] = {}  # node key -> IPv6 node address (the endpoints listing)
        self.attach_mode_cfg = cfg.bpf.attachMode
        self._initial = {"nodeIP": cfg.nodeIP, "podCIDR": cfg.podCIDR, "clusterCIDR": cfg.clusterCIDR,
                         "defaultDeny": cfg.policy.defaultDeny, "routingMode": cfg.routingMode,
                         "tunnelProtocol": cfg.tunnelProtocol, "kubeProxyReplacement": cfg.kubeProxyReplacement,
                         "serviceCIDR": cfg.serviceCIDR}
        self.cgroup_root_cfg = cfg.bpf.cgroupRoot
        self.underlay_cfg = cfg.underlayInterface
        self.services: ServiceProgrammer | None = None  # Service frontends -> the LB maps
        self.svc_attach: ServiceAttacher | None = None
        self._settings: dict[str, Any] = {}
        self._lock = threading.RLock()
        self.prog: Programs | None = None
        self.maps: mapsmod.MapHandles | None = None
        self.attacher: TcxAttacher | TcAttacher | None = None
        self.flows = FlowCollector(history=cfg.flows.history)
        self.flows.node = cfg.nodeName
        ex = cfg.flows.export
        self.exporter = FlowExporter(self.flows, ex.file, ex.maxBytes, ex.backups, ex.socket) if (
            ex.file or ex.socket) else None
        self.last_start: dict[str, Any] = {}
        self.mounted_bpffs = False
        self.policy: PolicyProgrammer | None = None  # compiled NetworkPolicy -> maps
        self.flow_table_size = cfg.bpf.flowTableSize
        self.service_map_size = cfg.bpf.serviceMapSize
        self.flow_idle = cfg.bpf.flowIdleTimeoutSeconds
        self.sweeper: flowtable.Sweeper | None = None
        self.sweeper6: flowtable.Sweeper | None = None  # the IPv6 flow table's (ct6)
        self.pinwatch: PinWatch | None = None
        self.policy_retry: PolicyRetry | None = None
        self.egress: EgressProgrammer | None = None  # compiled NetworkPolicy + masquerade -> egress map
        self._masquerade = cfg.egress.masqueradeEnabled
        self._snat_ip = _snat_address(cfg.nodeIP)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        with self._lock:
            self.mounted_bpffs = bpffs.ensure_mounted(os.path.dirname(self.root.rstrip("/")) or "/sys/fs/bpf") \
                if self.root.startswith(bpffs.BPFFS) else False
            bpffs.ensure_dir(self.root)
            progmod.ensure_dirs(self.root)
            flowtable.configure_size(self.flow_table_size)  # the layout the guard checks and BCC compiles
            services_configure_size(self.service_map_size)
            migration = mapsmod.prepare(self.root)  # schema guard BEFORE BCC sees the pins
            self.prog = progmod.compile_and_load(self.root, self.header_tree)
            migration.copy()
            self.maps = mapsmod.MapHandles(self.root)
            self._fill_tail_calls(self.prog)  # before nv_from_pod is attached: its IPv6 packets go there
            self.attacher = self._make_attacher()
            result = self.attacher.reconcile(self.prog.fds, self._local_ifindexes())
            self.svc_attach = ServiceAttacher(self.root)
            result["services_swapped"] = self.svc_attach.reconcile(self.prog.fds)
            migration.finish()
            ensure_sctp_crc(self.maps)
            self.services = ServiceProgrammer(self.maps)
            self._apply_settings(self._initial, initial=True)
            n = self.maps.count("policies")  # migrated or pre-existing entries must be honoured
            if self.maps.config_get(ConfigKey.POLICY_COUNT) != n:
                self.maps.config_set(ConfigKey.POLICY_COUNT, n)
            self.policy = PolicyProgrammer(self.maps)
            adopted = self.policy.adopt_live()  # the agent's full resync then rewrites only differences
            self.egress = EgressProgrammer(self.maps, self.maps.ncpu)
            adopted["egress"] = self.egress.adopt_live()
            self._sync_egress(initial=True)
            self.flows.explain = self.policy.explain
            self.flows.start(self.maps.fds["flows"])
            self.sweeper = flowtable.Sweeper(self.maps.fds["ct"], self.flow_table_size, self.flow_idle)
            self.sweeper.start()
            self.sweeper6 = flowtable.Sweeper(self.maps.fds["ct6"], self.flow_table_size, self.flow_idle,
                                              key=Flow6Key)
            self.sweeper6.start()
            self.pinwatch = PinWatch(self)
            self.pinwatch.start()
            self.policy_retry = PolicyRetry(self)
            self.policy_retry.start()
            if self.exporter is not None:
                self.exporter.start()
            self.last_start = {"migrations": migration.to_dict(), "policy_adopted": adopted, **result}
            log.info("ebpf datapath started: mode %s, %s", self.attacher.mode, self.last_start)

    def _fill_tail_calls(self, prog: Programs) -> None:
        """``ipv6_progs[0]``: the program nv_from_pod hands a pod's IPv6 packets to."""
        self._m().update("ipv6_progs", (0).to_bytes(4, "little"), prog.fds[progmod.FROM_POD6].to_bytes(4, "little"))

    def _make_attacher(self) -> TcxAttacher | TcAttacher:
        mode = self.attach_mode_cfg
        if mode == "auto":
            mode = "tcx" if tcx_supported() else "tc"
        return TcxAttacher(self.root) if mode == "tcx" else TcAttacher(self.root)

    def stop(self) -> None:
        for t in (self.sweeper, self.sweeper6, self.pinwatch, self.policy_retry):  # outside the lock: their passes take it
            if t is not None:
                t.stop()
        with self._lock:
            self.sweeper = self.sweeper6 = self.pinwatch = self.policy_retry = None
            if self.exporter is not None:
                self.exporter.stop()
            self.flows.stop()
            self.policy = None
            self.egress = None
            self.services = None
            if isinstance(self.attacher, TcAttacher):
                self.attacher.close()
            if self.maps:
                self.maps.close()
                self.maps = None
            if self.prog:
                self.prog.close()
                self.prog = None

    def reload(self, cflags: dict[str, str] | None = None) -> dict[str, Any]:
        """Compile a new program version, then swap it atomically into every attachment."""
        new = progmod.compile_and_load(self.root, self.header_tree, cflags)  # seconds; traffic unaffected meanwhile
        with self._lock:
            assert self.attacher is not None
            old = self.prog
            self._fill_tail_calls(new)  # the old nv_from_pod may call the new one meanwhile: same maps
            result = self.attacher.reconcile(new.fds, self._local_ifindexes())
            if self.svc_attach is not None:
                result["services_swapped"] = self.svc_attach.reconcile(new.fds)
            self.prog = new
        if old:
            old.close()
        return {"programs": new.ids, **result}

    def _m(self) -> mapsmod.MapHandles:
        if self.maps is None:
            raise DatapathError("ebpf datapath is not started")
        return self.maps

    # ------------------------------------------------------------------ config
    def configure(self, settings: dict[str, Any]) -> None:
        with self._lock:
            self._apply_settings(settings)

    def _apply_settings(self, s: dict[str, Any], initial: bool = False) -> None:
        s6 = family_settings(s, 6)
        s = family_settings(s, 4)
        m = self._m()
        writes: dict[ConfigKey, int] = {}
        for key, hi, lo in (("nodeIP", ConfigKey.NODE_IP6_HI, ConfigKey.NODE_IP6_LO),
                            ("gateway", ConfigKey.GATEWAY_IP6_HI, ConfigKey.GATEWAY_IP6_LO)):
            if s6.get(key):
                writes[hi], writes[lo] = ip6_config_words(s6[key], key)
        # clusterCIDR, overlay: an unknown address in it is NO_ROUTE; serviceCIDR, kube-proxy mode:
        # a ClusterIP's egress is decided on the translated packet (bpf/datapath6.c), else where
        # IPv6 frontends can be per packet (bpf/services6.c)
        for key, hi, lo, plen in (
            ("clusterCIDR", ConfigKey.CLUSTER_CIDR6_HI, ConfigKey.CLUSTER_CIDR6_LO, ConfigKey.CLUSTER_CIDR6_PREFIX_LEN),
            ("serviceCIDR", ConfigKey.SERVICE_CIDR6_HI, ConfigKey.SERVICE_CIDR6_LO, ConfigKey.SERVICE_CIDR6_PREFIX_LEN),
        ):
            if not s6.get(key):
                continue
            try:
                net6 = ipaddress.IPv6Network(str(s6[key]), strict=True)
            except ValueError as e:
                raise ConfigError(f"{key}: {s6[key]!r} is not an IPv6 CIDR ({e})") from None
            writes[hi], writes[lo] = ip6_config_words(net6.network_address, key)
            writes[plen] = net6.prefixlen
        if s.get("nodeIP"):
            writes[ConfigKey.NODE_IP] = ip_num(s["nodeIP"], "nodeIP")
        for key, ipk, lenk in (("podCIDR", ConfigKey.POD_CIDR_IP, ConfigKey.POD_CIDR_PREFIX_LEN),
                               ("clusterCIDR", ConfigKey.CLUSTER_CIDR_IP, ConfigKey.CLUSTER_CIDR_PREFIX_LEN),
                               ("serviceCIDR", ConfigKey.SERVICE_CIDR_IP, ConfigKey.SERVICE_CIDR_PREFIX_LEN)):
            if s.get(key):
                try:
                    net = ipaddress.IPv4Network(str(s[key]), strict=True)
                except ValueError as e:
                    raise ConfigError(f"{key}: {s[key]!r} is not an IPv4 CIDR ({e})") from None
                writes[ipk], writes[lenk] = int(net.network_address), net.prefixlen
        if s.get("gateway"):
            writes[ConfigKey.GATEWAY_IP] = ip_num(s["gateway"], "gateway")
        if s.get("routingMode"):
            if s["routingMode"] not in ("overlay", "native"):
                raise ConfigError(f"routingMode: {s['routingMode']!r} is not overlay or native")
            writes[ConfigKey.MODE] = 0 if s["routingMode"] == "overlay" else 1
        if s.get("tunnelProtocol"):
            writes[ConfigKey.TUNNEL_TYPE] = 0 if s["tunnelProtocol"] == "geneve" else 1
        if "defaultDeny" in s and s["defaultDeny"] is not None:
            if not isinstance(s["defaultDeny"], bool):
                raise ConfigError(f"defaultDeny: {s['defaultDeny']!r} is not a boolean")
            writes[ConfigKey.DEFAULT_DENY] = int(s["defaultDeny"])
        if s.get("nodeName"):
            self.flows.node = str(s["nodeName"])
        egress_changed = False
        if "masquerade" in s and s["masquerade"] is not None:
            if not isinstance(s["masquerade"], bool):
                raise ConfigError(f"masquerade: {s['masquerade']!r} is not a boolean")
            egress_changed |= s["masquerade"] != self._masquerade
            self._masquerade = s["masquerade"]
        if s.get("nodeIP") and _snat_address(s["nodeIP"]) != self._snat_ip:
            self._snat_ip, egress_changed = _snat_address(s["nodeIP"]), True
        if "mtu" in s and s["mtu"] is not None and not isinstance(s["mtu"], int):
            raise ConfigError(f"mtu: {s['mtu']!r} is not an integer")
        if s.get("kubeProxyReplacement") is not None:
            if not isinstance(s["kubeProxyReplacement"], bool):
                raise ConfigError(f"kubeProxyReplacement: {s['kubeProxyReplacement']!r} is not a boolean")
            writes[ConfigKey.L4LB_ENABLED] = int(s["kubeProxyReplacement"])
        if initial and self._settings:
            self._attach_services()
            return  # a restart re-applies what configure() set before, not the file defaults
        bump = any(k == ConfigKey.DEFAULT_DENY and m.config_get(k) != v for k, v in writes.items())
        for k, v in writes.items():
            m.config_set(k, v)
        if bump:
            self._bump_policy_revision()
        if egress_changed and self.egress is not None:
            self._sync_egress()
        if not initial:
            self._settings.update({k: v for k, v in s.items() if v is not None})
        self._attach_services()

    def _attach_services(self) -> None:
        """The socket-level and NodePort hooks follow kubeProxyReplacement (with kube-proxy
        translating, nothing of ours may sit on the node's cgroup or underlay)."""
        m, sa, prog = self._m(), self.svc_attach, self.prog
        if sa is None or prog is None:
            return
        if not m.config_get(ConfigKey.L4LB_ENABLED):
            sa.detach_cgroup()
            sa.detach_underlay()
            return
        try:
            cg = resolve_cgroup_root(self.cgroup_root_cfg)
        except FileNotFoundError as e:
            raise ConfigError(str(e)) from None
        if sa.cgroup != cg:
            sa.attach_cgroup(cg, prog.fds)
        node_ip = _node_address(m)
        if not node_ip:
            return
        dev = self.underlay_cfg or _interface_holding(node_ip)
        if not dev or dev == "lo":
            log.warning("no interface holds node IP %s: NodePort from outside the node is not served", node_ip)
            return
        ifindex = self._resolve_ifindex(dev, "underlayInterface")
        if sa.underlay != dev:
            sa.attach_underlay(dev, ifindex, prog.fds)

    def _bump_policy_revision(self) -> None:
        m = self._m()
        m.config_set(ConfigKey.POLICY_REVISION, (m.config_get(ConfigKey.POLICY_REVISION) + 1) & 0xFFFFFFFF)

    # ------------------------------------------------------------------ endpoints
    def _resolve_ifindex(self, ifname: str, field: str) -> int:
        try:
            return socket.if_nametoindex(ifname)
        except OSError:
            raise DatapathError(f"{field}: interface {ifname!r} does not exist in the dataplane's "
                                f"network namespace") from None

    def upsert_endpoint(self, ep: Endpoint) -> None:
        if not ep.host_ifname:
            raise ConfigError("host_ifname: required for a local endpoint")
        keys = [endpoint_key(a, f"ips[{i}]") for i, a in enumerate(ep.ips)]
        ifindex = self._resolve_ifindex(ep.host_ifname, "host_ifname")
        mac = mac_bytes(ep.mac, "mac")
        host_mac = mac_bytes(ep.host_mac, "host_mac") if ep.host_mac else self._link_mac(ifindex)
        flags = EndpointFlag.SHAPED if ep.ingress_rate or ep.egress_rate else 0
        # this node's own pods: 0 (nv_is_local) when the node has no IPv4 address for CONFIG[NODE_IP]
        v = EndpointValue(ifindex=ifindex, identity=ep.identity,
                          node_ip=self._tunnel_endpoint(ep.node_ip) if ep.node_ip and ":" not in ep.node_ip else 0,
                          flags=flags)
        ctypes.memmove(v.mac, mac, 6)
        ctypes.memmove(v.host_mac, host_mac, 6)
        with self._lock:
            m = self._m()
            assert self.prog is not None and self.attacher is not None
            gw4, gw6 = ep.gateway_of(4), ep.gateway_of(6)
            if gw4 and not m.config_get(ConfigKey.GATEWAY_IP):
                m.config_set(ConfigKey.GATEWAY_IP, ip_num(gw4, "gateway"))
            if gw6 and not (m.config_get(ConfigKey.GATEWAY_IP6_HI) or m.config_get(ConfigKey.GATEWAY_IP6_LO)):
                hi, lo = ip6_config_words(gw6, "gateways")
                m.config_set(ConfigKey.GATEWAY_IP6_HI, hi)
                m.config_set(ConfigKey.GATEWAY_IP6_LO, lo)
            changed = False
            for a, (mapname, key) in zip(ep.ips, keys, strict=True):
                changed |= self._flows_stale(mapname, key, v)
                m.update(mapname, key, v)  # map first: the programs need it at once
                self._name(a, ep.namespace, ep.pod)
            if changed:
                self._bump_policy_revision()  # flows decided under the old endpoint re-decide
            for a in ep.ips:
                self._route(a, ifindex, add=True)
            if flags:
                _ensure_ip_forwarding()
            try:
                self.attacher.attach(ep.host_ifname, ifindex, self.prog.fds)
            except OSError as e:
                if e.errno == errno.EINVAL and isinstance(self.attacher, TcxAttacher) \
                        and self.attach_mode_cfg == "auto":
                    log.warning("tcx attach failed (%s); falling back to clsact + cls_bpf", e)
                    self.attacher = TcAttacher(self.root)
                    self.attacher.attach(ep.host_ifname, ifindex, self.prog.fds)
                else:
                    raise DatapathError(f"{ep.host_ifname}: attach failed: {e}") from e

    # ------------------------------------------------------------------ section prewarm
    # The programs hold no per-pod state (who a packet belongs to comes from the endpoints map), so
    # they can sit on a pooled veth before its pod exists: the attach (two tcx links, each an RCU
    # grace period) is paid by the pool, not by the CNI ADD.
    def prewarm_interface(self, host_ifname: str) -> None:
        ifindex = self._resolve_ifindex(host_ifname, "host_ifname")
        with self._lock:
            assert self.prog is not None and self.attacher is not None
            self.attacher.attach(host_ifname, ifindex, self.prog.fds)

    def release_interface(self, host_ifname: str) -> None:
        with self._lock:
            if self.attacher is not None:
                self.attacher.detach(host_ifname)

    def adopt_interface(self, pooled_ifname: str, host_ifname: str) -> None:
        with self._lock:
            if self.attacher is not None:
                self.attacher.rename(pooled_ifname, host_ifname)

    def delete_endpoint(self, ip: str, host_ifname: str | None = None) -> None:
        mapname, key = endpoint_key(ip, "ip")
        with self._lock:
            m = self._m()
            raw = m.lookup(mapname, key)
            ifname = host_ifname
            if raw is not None:
                v = EndpointValue.from_buffer_copy(raw)
                if not ifname and v.ifindex:
                    try:
                        ifname = socket.if_indextoname(v.ifindex)
                    except OSError:
                        ifname = None
                if v.ifindex:
                    self._route(ip, v.ifindex, add=False)
            stale = raw is not None and EndpointValue.from_buffer_copy(raw).ifindex != 0
            m.delete(mapname, key)
            if stale:
                self._bump_policy_revision()  # no flow keeps delivering to the gone veth
            self._name(ip, "", "")
            if ifname and self.attacher:
                self.attacher.detach(ifname)

    def upsert_remote(self, remote: RemoteEndpoint) -> None:
        v = EndpointValue(ifindex=0, identity=remote.identity, node_ip=self._tunnel_endpoint(remote.node_ip))
        mapname, key = endpoint_key(remote.ip, "ip")
        with self._lock:
            changed = self._flows_stale(mapname, key, v)
            self._m().update(mapname, key, v)
            self._name(remote.ip, remote.namespace, remote.pod)
            if changed:
                self._bump_policy_revision()

    def _tunnel_endpoint(self, node_ip: str) -> int:
        """``node_ip`` of a remote endpoint: the node key (``tunnels`` key) of the address the
        overlay encapsulates to, an IPv4 one or an IPv6 one (an IPv6 underlay). In native mode the
        programs never read it (the kernel routes a remote pod's packets), and the node address of
        a remote IPv6 pod there is its node's IPv6 one (the BGP next hop): it is left 0."""
        if ":" in node_ip:
            if self._m().config_get(ConfigKey.MODE) == 1:
                return 0
            try:
                key = node_key(node_ip)
            except ValueError:
                raise ConfigError(f"node_ip: {node_ip!r} is not an IP address") from None
            self._node_ips[key] = node_ip
            return key
        return ip_num(node_ip, "node_ip")

    def _name(self, ip: str, namespace: str, pod: str) -> None:
        """Pod names for flow events and filters (the agent sends them with every endpoint)."""
        raw = raw_ip(ip)
        if namespace and pod:
            self.flows.names[raw] = f"{namespace}/{pod}"
        else:
            self.flows.names.pop(raw, None)

    def _flows_stale(self, mapname: str, key: EndpointKey | Endpoint6Key, new: EndpointValue | None) -> bool:
        """Does writing ``new`` (None: deleting) over the entry make flow-table entries wrong?
        They hold the identity they were decided under and, for a same-node destination, its veth
        and MACs (the fast path's copy); a changed copy makes the flows re-decide."""
        raw = self._m().lookup(mapname, key)
        if raw is None:
            return False
        old = EndpointValue.from_buffer_copy(raw)
        if new is None:
            return old.ifindex != 0
        return old.identity != new.identity or (old.ifindex != 0 and (
            old.ifindex != new.ifindex or bytes(old.mac) != bytes(new.mac) or bytes(old.host_mac) != bytes(new.host_mac)))

    def delete_remote(self, ip: str) -> None:
        mapname, key = endpoint_key(ip, "ip")
        with self._lock:
            self._m().delete(mapname, key)
            self._name(ip, "", "")

    def list_endpoints(self) -> list[dict[str, Any]]:
        m = self._m()
        node_ip = m.config_get(ConfigKey.NODE_IP)
        out = []
        entries = [(str(ipaddress.IPv4Address(EndpointKey.from_buffer_copy(k).ip)), raw) for k, raw in m.items("endpoints")]
        entries += [(str(ipaddress.IPv6Address(k)), raw) for k, raw in m.items("endpoints_v6")]
        for ip, raw in entries:
            v = EndpointValue.from_buffer_copy(raw)
            local = bool(v.ifindex) and v.node_ip in (0, node_ip)
            ifname = None
            if v.ifindex:
                try:
                    ifname = socket.if_indextoname(v.ifindex)
                except OSError:
                    ifname = None
            out.append({"ip": ip, "identity": v.identity, "local": local,
                        "ifindex": v.ifindex, "host_ifname": ifname, "mac": mac_str(v.mac),
                        "host_mac": mac_str(v.host_mac),
                        "node_ip": self._node_ips.get(v.node_ip) or str(ipaddress.IPv4Address(v.node_ip))
                        if v.node_ip else ""})
        return sorted(out, key=lambda e: (ipaddress.ip_address(e["ip"]).version, ipaddress.ip_address(e["ip"])))

    def _local_ifindexes(self) -> set[int]:
        if self.maps is None:
            self.maps = mapsmod.MapHandles(self.root)
        return {EndpointValue.from_buffer_copy(raw).ifindex for name in ("endpoints", "endpoints_v6")
                for _, raw in self.maps.items(name)} - {0}

    def _link_mac(self, ifindex: int) -> bytes:
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            links = ipr.get_links(ifindex)
            return mac_bytes(links[0].get_attr("IFLA_ADDRESS"), "host_mac")

    def _route(self, ip: str, ifindex: int, add: bool) -> None:
        from pyroute2 import IPRoute
        from pyroute2.netlink.exceptions import NetlinkError

        with IPRoute() as ipr:
            try:
                if ":" in ip:
                    ipr.route("replace" if add else "del", dst=f"{ip}/128", oif=ifindex, family=socket.AF_INET6,
                              proto=RTPROT_NOVANET)
                else:
                    ipr.route("replace" if add else "del", dst=f"{ip}/32", oif=ifindex, scope=253,
                              proto=RTPROT_NOVANET)
            except NetlinkError as e:
                if add or e.code not in (errno.ESRCH, errno.ENOENT):
                    raise DatapathError(f"route {ip}: {e}") from e

    # ------------------------------------------------------------------ policy (identity pairs)
    def _policy_key(self, e: dict[str, Any]) -> PolicyKey:
        try:
            proto = protocol_number(e.get("protocol", 0))
        except ValueError as err:
            raise ConfigError(str(err)) from None
        return PolicyKey(src_identity=_int(e, "src_identity", 0, 0, 0xFFFFFFFF),
                         dst_identity=_int(e, "dst_identity", 0, 0, 0xFFFFFFFF),
                         protocol=proto,
                         dst_port=_int(e, "dst_port", 0, 0, 65535))

    @staticmethod
    def _action(e: dict[str, Any]) -> int:
        a = e.get("action", "allow")
        if isinstance(a, str) and a.upper() in Action.__members__:
            return int(Action[a.upper()])
        if a in (0, 1):
            return int(a)
        raise ConfigError(f"action: {a!r} is not allow or deny")

    def upsert_policy(self, entry: dict[str, Any]) -> None:
        k, a = self._policy_key(entry), self._action(entry)
        with self._lock:
            self._m().update("policies", k, PolicyValue(action=a))
            self._policy_changed()

    def delete_policy(self, entry: dict[str, Any]) -> bool:
        k = self._policy_key(entry)
        with self._lock:
            ok = self._m().delete("policies", k)
            self._policy_changed()
            return ok

    def sync_policies(self, entries: list[dict[str, Any]]) -> dict[str, int]:
        """Full replace: entries missing from ``entries`` are deleted."""
        want = {bytes(self._policy_key(e)): bytes(PolicyValue(action=self._action(e))) for e in entries}
        with self._lock:
            m = self._m()
            have = dict(m.items("policies"))
            removed = [k for k in have if k not in want]
            for k in removed:
                m.delete("policies", k)
            added = updated = 0
            for k, v in want.items():
                if have.get(k) != v:
                    m.update("policies", k, v)
                    added += k not in have
                    updated += k in have
            self._policy_changed()
            return {"added": added, "removed": len(removed), "updated": updated}

    def list_policies(self) -> list[dict[str, Any]]:
        out = []
        for k, v in self._m().items("policies"):
            pk, pv = PolicyKey.from_buffer_copy(k), PolicyValue.from_buffer_copy(v)
            out.append({"src_identity": pk.src_identity, "dst_identity": pk.dst_identity,
                        "protocol": pk.protocol, "dst_port": pk.dst_port,
                        "action": Action(pv.action).name if pv.action in (0, 1) else str(pv.action)})
        return sorted(out, key=lambda e: (e["src_identity"], e["dst_identity"], e["protocol"], e["dst_port"]))

    def _policy_changed(self) -> None:
        m = self._m()
        m.config_set(ConfigKey.POLICY_COUNT, m.count("policies"))
        self._bump_policy_revision()

    # ------------------------------------------------------------------ section: policy
    def apply_policy(self, upserts: Sequence[EndpointPolicy], deletes: Sequence[str] = (),
                     full: bool = False) -> dict[str, Any]:
        """Program compiled NetworkPolicy for local endpoints (``EndpointPolicy.ip`` set).

        ``full`` replaces everything (endpoints not listed lose their entry); otherwise only the
        listed endpoints change. Returns what was written and the new policy revision.
        """
        for i, ep in enumerate(upserts):
            try:
                ipaddress.ip_address(ep.ip or "")
            except ValueError:
                raise ConfigError(f"endpoints[{i}].ip: {ep.ip!r} is not an IP address") from None
        with self._lock:
            if self.policy is None:
                raise DatapathError("ebpf datapath is not started")
            st = self.policy.apply(upserts, deletes, full)
            eg = self._sync_egress(bump=False)
            if st.changed() or eg["written"] or eg["removed"]:
                self._bump_policy_revision()
            return {**st.__dict__, "egress": eg, "revision": self._m().config_get(ConfigKey.POLICY_REVISION),
                    "rules": self.policy.rule_count()}

    def retry_policy(self) -> dict[str, Any] | None:
        """Program policy that found the maps full before (its endpoints failed closed meanwhile)."""
        with self._lock:
            if self.policy is None:
                return None
            st = self.policy.retry()
            if st is None:
                return None
            eg = self._sync_egress(bump=False)
            if st.changed() or eg["written"] or eg["removed"]:
                self._bump_policy_revision()
            if not st.blocked:
                log.info("policy maps have room again: the endpoints that failed closed have their policy")
            return {**st.__dict__, "egress": eg}

    def policy_maps(self) -> dict[str, Any]:
        """Fill of the policy maps, and the endpoints failed closed because they were full."""
        pol = self.policy
        if pol is None:
            return {}
        cap = {n: mapsmod.MAPS[n].spec.max_entries for n in ("policy_rules", "policy_cidrs", "policy_cidrs_v6",
                                                               "ep_policy")}
        v6 = sum(":" in c for c in pol.cidr_ids)
        return {"rules": pol.rule_count(), "rulesCapacity": cap["policy_rules"], "cidrs": len(pol.cidr_ids) - v6,
                "cidrsCapacity": cap["policy_cidrs"], "cidrsV6": v6, "cidrsV6Capacity": cap["policy_cidrs_v6"],
                "endpoints": len(pol.ep_values),
                "endpointsCapacity": cap["ep_policy"], "failedClosed": sorted(pol.blocked),
                "fullEvents": pol.full_events, "lastFull": pol.last_full}

    # ------------------------------------------------------------------ egress map
    def _sync_egress(self, initial: bool = False, bump: bool = True) -> dict[str, int]:
        """Recompile the egress map from the endpoints' compiled policy and the masquerade setting."""
        assert self.egress is not None and self.policy is not None
        entries = compile_egress((e.policy for e in self.policy.endpoints.values()), self._masquerade, self._snat_ip)
        if initial:
            # After a restart the endpoints' policy arrives with the agent's resync; until then the
            # entries a previous process wrote stay (NetworkPolicy behind them is adopted too).
            have = {e.key for e in entries}
            entries += [self._adopted(k) for k in self.egress.values if k not in have]
        res = self.egress.apply(entries)
        if bump and (res["written"] or res["removed"]):
            self._bump_policy_revision()
        return res

    def _adopted(self, key: tuple[int, str]) -> EgressEntry:
        action, flags, _, _, snat = EGRESS_VALUE.unpack(self.egress.values[key])  # type: ignore[union-attr]
        return EgressEntry(key[0], key[1], EgressAction(action), EgressFlag(flags),
                           str(ipaddress.IPv4Address(snat)) if action == EgressAction.SNAT else "", ("",),
                           "kept from before the dataplane restarted")

    def check_connection(self, src_ip: str, dst_ip: str, protocol: str | int, port: int) -> dict[str, Any]:
        """The live maps' verdict for a new connection (novanet_ebpf_policy.mapcheck)."""
        from novanet_ebpf_policy import mapcheck

        fams = []
        for v, field in ((src_ip, "src_ip"), (dst_ip, "dst_ip")):
            try:
                fams.append(ipaddress.ip_address(str(v)).version)
            except ValueError:
                raise ConfigError(f"{field}: {v!r} is not an IP address") from None
        if fams[0] != fams[1]:
            raise ConfigError(f"dst_ip: {dst_ip} is not of the family of src_ip {src_ip}")
        with self._lock:
            refs = dict(self.policy.refs) if self.policy else {}
            return mapcheck.check(self._m(), refs, src_ip, dst_ip, protocol, port)

    def egress_rules(self) -> dict[str, Any]:
        """The egress map with its live per-rule counters."""
        with self._lock:
            if self.egress is None:
                raise DatapathError("ebpf datapath is not started")
            return {"masquerade": self._masquerade, "snatIP": self._snat_ip, "rules": self.egress.rows()}

    def list_policy(self) -> dict[str, Any]:
        """The live policy maps decoded: rule entries, CIDR ids, endpoint pointers."""
        with self._lock:
            m, pol = self._m(), self.policy
            assert pol is not None
            by_id = {cid: c for c, cid in pol.cidr_ids.items()}
            users = pol.set_users()
            rules = [describe_entry(bytes(k), bytes(v), pol.refs, by_id) for k, v in m.items("policy_rules")]
            for r in rules:
                r["used_by"] = [{"ip": ip, "pod": pod, "direction": d} for ip, pod, d in users.get(r["set"], [])]
            eps = []
            for ip, prog in sorted(pol.endpoints.items()):
                row: dict[str, Any] = {"ip": ip, "pod": prog.policy.pod, "identity": prog.policy.identity}
                for name, rules_ in prog.sets():
                    row[name] = {"isolated": rules_ is not None,
                                 "set": pol.by_rules.get(rules_) if rules_ is not None else None,
                                 "selected_by": list(prog.policy.direction(name).selected_by)}
                eps.append(row)
            return {"rules": sorted(rules, key=lambda r: (r["set"], r["peer_kind"], str(r.get("peer_identity", "")),
                                                          str(r.get("peer_cidr", "")), r["protocol"], r["ports"])),
                    "cidrs": [{"cidr": c, "id": i} for c, i in sorted(pol.cidr_ids.items(), key=lambda x: x[1])],
                    "endpoints": eps, "revision": m.config_get(ConfigKey.POLICY_REVISION)}

    # ------------------------------------------------------------------ section: flows
    def flow_events(self, identity: int = 0, drops_only: bool = False, follow: bool = False,
                    limit: int = 100, filter: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """Recent flow events (the last ``limit``), then with ``follow`` new ones as they come."""
        flt = FlowFilter.from_params(filter) if filter else None  # FilterError is a ValueError
        if follow:
            return self.flows.follow(identity, drops_only, limit, flt=flt)
        return iter(self.flows.recent(identity, drops_only, limit, flt))

    # ------------------------------------------------------------------ Services (docs/services.md)
    def _svc(self) -> ServiceProgrammer:
        if self.services is None:
            raise DatapathError("ebpf datapath is not started")
        return self.services

    def upsert_service(self, frontend: ServiceFrontend) -> None:
        with self._lock:
            self._svc().upsert(frontend)

    def delete_service(self, key: str) -> None:
        with self._lock:
            self._svc().delete(key)

    def list_services(self) -> list[dict[str, Any]]:
        with self._lock:
            return self._svc().list()

    def set_service_backends(self, backends: list[ServiceBackend]) -> None:
        with self._lock:
            self._svc().set_kp_backends(backends)

    def service_status(self) -> dict[str, Any]:
        with self._lock:
            svc = self._svc()
            return {"kubeProxyReplacement": bool(self._m().config_get(ConfigKey.L4LB_ENABLED)),
                    "cgroup": self.svc_attach.cgroup if self.svc_attach else None,
                    "underlay": self.svc_attach.underlay if self.svc_attach else None,
                    "links": self.svc_attach.list() if self.svc_attach else [],
                    "entries": svc.counts(), "translations": svc.stats(), "maps": svc.maps_status()}

    def retry_services(self) -> dict[str, int] | None:
        """Program frontends that found the service maps full before (they failed closed meanwhile)."""
        with self._lock:
            return self.services.retry() if self.services is not None else None

    # ------------------------------------------------------------------ observability
    def programs(self) -> list[dict[str, Any]]:
        if not self.prog:
            return []
        out = []
        for name, fd in self.prog.fds.items():
            s = stats.prog_stats(fd)
            out.append({"name": name, "hook": progmod.HOOKS[name],
                        "prog_id": self.prog.ids[name], "tag": self.prog.tags[name], **s.to_dict()})
        return out

    def bpf_stats(self) -> dict[str, Any]:
        return {"enabled": stats.stats_enabled(), "programs": self.programs()}

    def links(self) -> list[dict[str, Any]]:
        if isinstance(self.attacher, TcxAttacher):
            return self.attacher.list()
        if isinstance(self.attacher, TcAttacher):
            out = []
            for idx in sorted(self._local_ifindexes()):
                for f in self.attacher.filters(idx):
                    out.append({"interface": socket.if_indextoname(idx), "ifindex": idx, **f})
            return out
        return []

    def flow_table(self) -> dict[str, Any]:
        """Fill level as of the last sweep, and the new flows refused because it was full (live)."""
        st = dict(self.sweeper.stats) if self.sweeper else {"capacity": self.flow_table_size}
        st["fullDrops"] = self.drop_counters().get("FLOW_TABLE_FULL", 0)
        if self.sweeper6 is not None:
            st["ipv6"] = dict(self.sweeper6.stats)  # the IPv6 flows' own table (ct6), swept the same way
        return st

    def traffic(self) -> dict[str, Any]:
        return self._m().traffic()

    # ------------------------------------------------------------------ section: stats
    def datapath_stats(self) -> dict[str, Any]:
        """Counters for novanetctl metrics (read live; heavier than status, so not in it)."""
        maps = [{"name": m["name"], "type": m["type"], "entries": m["entries"], "max_entries": m["max_entries"]}
                for m in self.map_info() if m["entries"] is not None]
        return {"traffic": self.traffic(), "drops": self.drop_counters(), "flow_events": self.flow_counters(),
                "maps": maps, "flow_table": self.flow_table(),
                "egress_rules": len(self.egress.entries) if self.egress else 0,
                "export": self.exporter.stats() if self.exporter is not None else None}

    def drop_counters(self) -> dict[str, int]:
        return self._m().drop_counts()

    def flow_counters(self) -> dict[str, int]:
        fs = self._m().flow_stats()
        return {"submitted": fs["submitted"], "lost": fs["lost"], "new_flows": fs["new_flows"],
                "consumed": self.flows.consumed, "follower_dropped": self.flows.follower_dropped,
                "skipped": self.flows.skipped}

    def status(self) -> dict[str, Any]:
        started = self.maps is not None
        st: dict[str, Any] = {"name": self.name, "started": started, "root": self.root,
                              "attach_mode": self.attacher.mode if self.attacher else None,
                              "header_tree": self.header_tree}
        if not started:
            return st
        m = self._m()
        st.update({
            "programs": self.programs(),
            "links": self.links(),
            "endpoint_count": m.count("endpoints"),
            "policy_count": m.count("policies"),
            "policy_rules": self.policy.rule_count() if self.policy else 0,
            "policy_endpoints": len(self.policy.endpoints) if self.policy else 0,
            "policy_maps": self.policy_maps(),
            "tunnel_count": m.count("tunnels"),
            "services": self.service_status() if self.services else {},
            "drop_counters": self.drop_counters(),
            "flow_table": self.flow_table(),
            "pins": dict(self.pinwatch.stats) if self.pinwatch else {},
            "egress_rules": len(self.egress.entries) if self.egress else 0,
            "flow_events": self.flow_counters(),
            "policy_revision": m.config_get(ConfigKey.POLICY_REVISION),
            "default_deny": bool(m.config_get(ConfigKey.DEFAULT_DENY)),
            "last_start": self.last_start,
            "bpf_stats_enabled": stats.stats_enabled(),
        })
        return st

    def map_info(self) -> list[dict[str, Any]]:
        return self._m().info()


def pin_layout(root: str) -> dict[str, str]:
    """Where each map lives (for docs and tests)."""
    return {n: pinned.versioned_path(root, mdef.spec) for n, mdef in mapsmod.MAPS.items()}


__all__ = ["EbpfDatapath", "DatapathError", "pin_layout", "syscall"]
