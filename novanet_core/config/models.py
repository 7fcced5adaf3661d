"""The NovaNet config keys.

Keys are camelCase as in the guide and Helm values (``policy.defaultDeny``,
``egress.masqueradeEnabled``). Unknown keys are rejected so that a typo is an error, not a
silently ignored setting; plugin-specific settings live under ``pluginSettings.<name>``. Every
key's ``description`` is what docs/configuration.md (generated, novanet_core.config.reference) shows.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from novanet_core import ipfamily

# An IPv6 underlay's outer header is this much larger than IPv4's (40 vs 20 bytes); each tunnel
# plugin states its own IPv4 overhead (``BpfTunnel.overhead``).
OUTER_IPV6_EXTRA = 20


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_assignment=True)


def _d(default: Any, description: str, **kw: Any) -> Any:
    """A config key: its default and the sentence docs/configuration.md shows for it."""
    return Field(default=default, description=description, **kw)


def _section(model: type[BaseModel], description: str) -> Any:
    return Field(default_factory=model, description=description)


class IpamConfig(_Model):
    type: str = _d("host-local", "selects the IPAM backend (a plugin's name; `novanetctl plugins` lists them)")
    dataDir: str = _d("/var/lib/cni/networks/novanet", "IPAM state (one file per allocated IP); survives restarts")


class PolicyConfig(_Model):
    defaultDeny: bool = _d(False, "cluster-wide default deny: a pod no NetworkPolicy allows is isolated both ways "
                                  "(see policy.md)")


class EgressConfig(_Model):
    masqueradeEnabled: bool = _d(True, "SNAT pod traffic leaving the cluster CIDR to the node address (the egress "
                                       "map shows SNAT; off: it leaves with the pod address)")


class BpfConfig(_Model):
    root: str = _d("/sys/fs/bpf/novanet", "bpffs directory for pinned maps, programs and links")
    headerTree: str = _d("/var/lib/novanet/ktree", "where the kernel header tree BCC compiles against is built")
    attachMode: Literal["auto", "tcx", "tc"] = _d(
        "auto", "`auto` (tcx when the kernel has it, else tc), `tcx`, `tc`. Both survive a dataplane restart; tcx "
                "links cost 5-15 ms each to create on the measured VM (two per pod), tc filters ~1 ms (benchmarks.md)")
    flowTableSize: int = _d(65536, "entries of the flow table (`ct` map, two per flow); full = new flows dropped "
                                   "as `FLOW_TABLE_FULL` (datapath.md)", ge=256, le=4 * 1024 * 1024)
    serviceMapSize: int = _d(65536, "Service frontends the load-balancer holds (`services`, `service_meta`; "
                                    "`backends` and `lb_members` hold 4x as many slots); a frontend that does not fit "
                                    "is refused as `SERVICE_MAP_FULL` until it does (services.md)", ge=16,
                             le=1024 * 1024)
    flowIdleTimeoutSeconds: float = _d(300.0, "a flow idle this long in both directions is removed from the flow "
                                              "table", ge=1, le=86400)
    cgroupRoot: str | None = _d(None, "cgroup v2 directory the socket-level Service programs attach to; unset = the "
                                      "cgroup v2 root (every process on the node). The lab sets each node's own subtree")


class WarmPoolConfig(_Model):
    """Host-side veth pairs made (and, with the eBPF datapath, attached) ahead of demand, so that
    a CNI ADD only moves the peer into the pod, addresses it and writes maps: creating a veth and
    its two tcx links costs two RCU grace periods per pod, which the pool pays off the ADD path."""

    size: int = _d(8, "host-side veth pairs the agent keeps made, up and (eBPF) attached ahead of demand; an ADD "
                      "that finds one only moves its peer into the pod, renames both ends and writes the maps "
                      "(cni.md#warm-pool). `0` = every ADD builds its own pair", ge=0, le=256)
    # Refill waits until no ADD has arrived for this long: building members takes the rtnl lock
    # (for a grace period, with tcx) and would stall the ADDs of a burst.
    refillIdleMs: int = _d(200, "the pool is refilled once no ADD has arrived for this long (building a member "
                                "holds the kernel's rtnl lock, with tcx across two RCU grace periods, which would "
                                "stall a burst of ADDs)", ge=0, le=60000)


class SocketsConfig(_Model):
    agent: str = _d("/run/novanet/novanet.sock", "the agent's socket for novanetctl")
    cni: str = _d("/run/novanet/cni.sock", "the agent's socket for the CNI binary")
    dataplane: str = _d("/run/novanet/dataplane.sock", "agent <-> dataplane")


class MetricsConfig(_Model):
    address: str = _d("127.0.0.1:9103", "the agent's Prometheus `/metrics` (host:port, IPv6 as [addr]:port); empty "
                                                "disables it")
    dataplaneAddress: str = _d("127.0.0.1:9104", "the dataplane's Prometheus `/metrics` (host:port, IPv6 as [addr]:port); empty "
                                                 "disables it (`novanet-dataplane --metrics-address` overrides)")

    @field_validator("address", "dataplaneAddress")
    @classmethod
    def _addr(cls, v: str) -> str:
        if v == "":
            return v
        host, sep, port = v.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"{v!r} is not host:port")
        if host.startswith("[") and host.endswith("]"):
            try:
                ipaddress.IPv6Address(host[1:-1])
            except ValueError:
                raise ValueError(f"{v!r}: {host} is not an IPv6 address") from None
        elif ":" in host or "," in host or any(c.isspace() for c in host):
            raise ValueError(f"{v!r} is not host:port (one address; an IPv6 host is written [addr]:port)")
        return v


class ApiConfig(_Model):
    """Limits on the local API sockets (agent, CNI, dataplane): callers are root, but a runaway
    loop or a stuck client must not take a node's control plane down with it."""

    maxRequestBytes: int = _d(16 * 1024 * 1024, "longest request line on any local socket (the dataplane's policy "
                                                "batches are the largest legitimate requests); longer is answered "
                                                "`request_too_large` and the connection closed",
                              ge=4096, le=256 * 1024 * 1024)
    maxConnections: int = _d(64, "connections served at once per socket (one thread each); more get "
                                 "`too_many_connections`", ge=1, le=4096)
    idleTimeoutSeconds: float = _d(120.0, "a connection with no complete request (or not reading its answers) for "
                                          "this long is closed", gt=0, le=86400)
    requestsPerSecond: float = _d(1000.0, "per socket, token bucket: beyond it requests are answered `rate_limited` "
                                          "(with `retryAfterSeconds`) without running; 0 = unlimited", ge=0)
    requestBurst: int = _d(2000, "depth of that bucket (a reconcile of a full node sends one request per pod)", ge=1)


class FlowExportConfig(_Model):
    file: str = _d("", "JSON-lines file the dataplane appends every flow event to, one object per line (the "
                       "`flows -o json` shape); empty disables it")
    maxBytes: int = _d(100 * 1024 * 1024, "rotate the export file when it grows past this many bytes", ge=4096)
    backups: int = _d(5, "rotated export files kept (`FILE.1` newest ... `FILE.N`)", ge=0, le=1000)
    socket: str = _d("", "unix socket on which the dataplane streams every flow event as JSON lines to each "
                         "connected reader; empty disables it")


class FlowsConfig(_Model):
    history: int = _d(65536, "flow events the dataplane keeps in memory for `novanetctl flows`/`drops`", ge=0,
                      le=1 << 22)
    export: FlowExportConfig = _section(FlowExportConfig, "flow export for collectors")


class StateSourceConfig(_Model):
    type: str = _d("manifests", "selects the state source (`manifests`, `kubernetes`)")
    path: str = _d("/etc/novanet/manifests", "manifest directory (manifests source)")
    kubeconfig: str | None = _d(None, "kubeconfig for an API-server source (none: in-cluster)")


class RoutingConfig(_Model):
    type: str = _d("frr-bgp", "selects the routing backend in native mode")
    settings: dict[str, Any] = Field(default_factory=dict, description="routing backend settings (see its "
                                                                        "plugin's docs, e.g. native-routing.md)")


class PluginsConfig(_Model):
    load: list[str] = Field(default_factory=list, description="load only these entry-point plugins (empty = all "
                                                              "installed)")
    disabled: list[str] = Field(default_factory=list, description="never load these plugins")


def _cidrs(v: Any) -> str:
    """One CIDR or one per family (Kubernetes' ``a,b`` form, or a list): the canonical ``a,b``."""
    try:
        return ipfamily.join(ipfamily.parse_cidrs(v))
    except ValueError as e:
        raise ValueError(str(e)) from None


class NovaNetConfig(_Model):
    nodeName: str = _d("", "this node's name in the state source (empty: the hostname)")
    nodeIP: str | None = _d(None, "underlay address; tunnels and routing use it (none: the Node's InternalIPs, "
                                  "else discovered). Dual-stack: one per family (`a,b` or a list), primary first")
    clusterCIDR: str = _d("10.42.0.0/16", "all pod addresses: one IPv4 range, one IPv6 range, or one of each "
                                          "(`10.42.0.0/16,fd00:42::/48` or a list); the first is the primary "
                                          "family (a pod's podIP); which datapaths serve IPv6: dual-stack.md")
    serviceCIDR: str = _d("10.96.0.0/12", "Service ClusterIPs (the API server's --service-cluster-ip-range): one "
                                          "IPv4 range, one IPv6 range, or one of each (the clusterCIDR forms); "
                                          "the lab allocates from it; must not overlap clusterCIDR; which "
                                          "families are load-balanced: services.md")
    podCIDR: str | None = _d(None, "this node's pools, one per family of clusterCIDR, each inside its family's "
                                   "range (none: the Node's spec.podCIDRs)")
    nodeCIDRMaskSize: int = _d(24, "size of per-node IPv4 PodCIDRs where NovaNet carves them (the lab)", ge=16, le=28)
    nodeCIDRMaskSizeIPv6: int = _d(64, "size of per-node IPv6 PodCIDRs (kube-controller-manager's "
                                       "--node-cidr-mask-size-ipv6)", ge=48, le=120)
    routingMode: Literal["overlay", "native"] = _d("overlay", "`overlay` (a tunnel backend) or `native` (a "
                                                              "routing backend)")
    tunnelProtocol: str = _d("vxlan", "selects the tunnel backend in overlay mode (`vxlan`, `geneve`)")
    datapath: str = _d("ebpf", "selects the datapath backend (`ebpf`, `kernel`)")
    mtu: int | Literal["auto"] = _d("auto", "pod MTU; `auto` = underlay MTU - tunnel overhead (VXLAN 50, NovaNet "
                                            "Geneve 58), or 576..9000")
    underlayInterface: str | None = _d(None, "where `mtu: auto` reads the underlay MTU (none: the interface "
                                             "holding nodeIP)")
    kubeProxyReplacement: bool = _d(True, "`true`: the datapath load-balances Services (ClusterIP, NodePort), no "
                                          "kube-proxy; `false`: kube-proxy translates, the agent programs no "
                                          "frontends and sends the datapath the Service backends whose replies must "
                                          "pass conntrack (services.md). The `kernel` datapath has no "
                                          "load-balancer: use `false` with it")
    ipam: IpamConfig = _section(IpamConfig, "IPAM")
    policy: PolicyConfig = _section(PolicyConfig, "NetworkPolicy")
    egress: EgressConfig = _section(EgressConfig, "traffic leaving the cluster")
    bpf: BpfConfig = _section(BpfConfig, "the eBPF datapath")
    sockets: SocketsConfig = _section(SocketsConfig, "local API sockets")
    warmPool: WarmPoolConfig = _section(WarmPoolConfig, "the CNI ADD warm pool of host veths")
    api: ApiConfig = _section(ApiConfig, "local API limits")
    metrics: MetricsConfig = _section(MetricsConfig, "Prometheus endpoints")
    flows: FlowsConfig = _section(FlowsConfig, "flow events")
    stateSource: StateSourceConfig = _section(StateSourceConfig, "where cluster state comes from")
    routing: RoutingConfig = _section(RoutingConfig, "native routing")
    plugins: PluginsConfig = _section(PluginsConfig, "plugin loading")
    pluginSettings: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="free-form settings per plugin (`pluginSettings.<plugin>`), checked by "
                                          "the plugin in novanet_validate_config")
    stateDir: str | None = _d(None, "agent endpoint records (none: `state` next to sockets.agent)")
    logLevel: Literal["debug", "info", "warn", "warning", "error"] = _d("info", "log level of both daemons")

    @field_validator("clusterCIDR", mode="before")
    @classmethod
    def _cluster(cls, v: Any) -> str:
        return _cidrs(v)

    @field_validator("serviceCIDR", mode="before")
    @classmethod
    def _service(cls, v: Any) -> str:
        return _cidrs(v)

    @field_validator("podCIDR", mode="before")
    @classmethod
    def _pod(cls, v: Any) -> str | None:
        return None if v is None else _cidrs(v)

    @field_validator("nodeIP", mode="before")
    @classmethod
    def _nodeip(cls, v: Any) -> str | None:
        if v in (None, ""):
            return None
        return ipfamily.join(ipfamily.parse_ips(v))

    @field_validator("mtu")
    @classmethod
    def _mtu(cls, v: int | str) -> int | str:
        if isinstance(v, int) and not 576 <= v <= 9000:
            raise ValueError("must be 'auto' or 576..9000")
        return v

    @property
    def state_dir(self) -> str:
        import os.path

        return self.stateDir or os.path.join(os.path.dirname(self.sockets.agent), "state")

    # ------------------------------------------------------------------ per family
    @property
    def cluster_cidrs(self) -> list[str]:
        """clusterCIDR's ranges, primary first."""
        return ipfamily.split(self.clusterCIDR)

    @property
    def pod_cidrs(self) -> list[str]:
        return ipfamily.split(self.podCIDR)

    @property
    def node_ips(self) -> list[str]:
        return ipfamily.split(self.nodeIP)

    @property
    def ip_families(self) -> list[int]:
        """The families pods get addresses of (clusterCIDR's), primary first."""
        return ipfamily.families(self.cluster_cidrs)

    @property
    def service_cidrs(self) -> list[str]:
        """serviceCIDR's ranges, primary first."""
        return ipfamily.split(self.serviceCIDR)

    def cluster_cidr(self, family: int) -> str | None:
        return ipfamily.pick(self.cluster_cidrs, family)

    def node_cidr_mask(self, family: int) -> int:
        return self.nodeCIDRMaskSize if family == 4 else self.nodeCIDRMaskSizeIPv6

    @model_validator(mode="after")
    def _consistent(self) -> NovaNetConfig:
        cluster = [ipaddress.ip_network(c) for c in self.cluster_cidrs]
        if self.podCIDR:
            ipfamily.check_inside([ipaddress.ip_network(c) for c in self.pod_cidrs], cluster,
                                  "podCIDR", "clusterCIDR")
        clash = ipfamily.overlapping([ipaddress.ip_network(c) for c in self.service_cidrs], cluster)
        if clash:
            raise ValueError(f"serviceCIDR {clash[0]} overlaps clusterCIDR {clash[1]}")
        return self
