"""The NovaNet config keys (documented in docs/configuration.md; keep both in step).

Keys are camelCase as in the guide and Helm values (``policy.defaultDeny``,
``egress.masqueradeEnabled``). Unknown keys are rejected so that a typo is an error, not a
silently ignored setting; plugin-specific settings live under ``plugins.<name>``.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Encapsulation overhead per tunnel protocol, IPv4 underlay: outer IPv4 20 + UDP 8 + header 8 +
# inner Ethernet 14 = 50; NovaNet's Geneve adds one 8-byte option (4 B option header + 4 B
# identity) = 58. Plugins report their own figure; these are for docs and validation.
KNOWN_OVERHEAD = {"vxlan": 50, "geneve": 58}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_assignment=True)


class IpamConfig(_Model):
    type: str = "host-local"
    dataDir: str = "/var/lib/cni/networks/novanet"


class PolicyConfig(_Model):
    defaultDeny: bool = False


class EgressConfig(_Model):
    masqueradeEnabled: bool = True


class BpfConfig(_Model):
    root: str = "/sys/fs/bpf/novanet"
    # Where the kernel header tree BCC compiles against is built (see novanet_core.bpf.ktree).
    headerTree: str = "/var/lib/novanet/ktree"
    attachMode: Literal["auto", "tcx", "tc"] = "auto"
    # The flow table (ct map): entries (two per flow), and how long an idle flow keeps its pair.
    flowTableSize: int = Field(default=65536, ge=256, le=4 * 1024 * 1024)
    flowIdleTimeoutSeconds: float = Field(default=300.0, ge=1, le=86400)


class WarmPoolConfig(_Model):
    """Host-side veth pairs made (and, with the eBPF datapath, attached) ahead of demand, so that
    a CNI ADD only moves the peer into the pod, addresses it and writes maps: creating a veth and
    its two tcx links costs two RCU grace periods per pod, which the pool pays off the ADD path."""

    size: int = Field(default=8, ge=0, le=256)  # members kept ready; 0 = every ADD builds its own pair
    # Refill waits until no ADD has arrived for this long: building members takes the rtnl lock
    # (for a grace period, with tcx) and would stall the ADDs of a burst.
    refillIdleMs: int = Field(default=200, ge=0, le=60000)


class SocketsConfig(_Model):
    agent: str = "/run/novanet/novanet.sock"
    cni: str = "/run/novanet/cni.sock"
    dataplane: str = "/run/novanet/dataplane.sock"


class ApiConfig(_Model):
    """Limits on the local API sockets (agent, CNI, dataplane): callers are root, but a runaway
    loop or a stuck client must not take a node's control plane down with it."""

    # One request line; the dataplane's policy batches are the largest legitimate requests.
    maxRequestBytes: int = Field(default=16 * 1024 * 1024, ge=4096, le=256 * 1024 * 1024)
    # Connections served at once per socket (one thread each); more are answered and closed.
    maxConnections: int = Field(default=64, ge=1, le=4096)
    # A connection that sends no complete request for this long is closed.
    idleTimeoutSeconds: float = Field(default=120.0, gt=0, le=86400)
    # Requests per second per socket (token bucket, ``requestBurst`` deep); 0 = unlimited.
    requestsPerSecond: float = Field(default=1000.0, ge=0)
    requestBurst: int = Field(default=2000, ge=1)


class MetricsConfig(_Model):
    address: str = "127.0.0.1:9103"  # the agent's endpoint; empty string disables it
    dataplaneAddress: str = "127.0.0.1:9104"  # the dataplane's endpoint; empty string disables it

    @field_validator("address", "dataplaneAddress")
    @classmethod
    def _addr(cls, v: str) -> str:
        if v == "":
            return v
        host, sep, port = v.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"{v!r} is not host:port")
        return v


class StateSourceConfig(_Model):
    type: str = "manifests"
    path: str = "/etc/novanet/manifests"
    kubeconfig: str | None = None


class RoutingConfig(_Model):
    type: str = "frr-bgp"
    settings: dict[str, Any] = Field(default_factory=dict)


class PluginsConfig(_Model):
    # Only these plugin names load from entry points (empty = all installed).
    load: list[str] = Field(default_factory=list)
    # Never load these (NOVANET_DISABLED_PLUGINS adds to it).
    disabled: list[str] = Field(default_factory=list)


def _cidr(v: str | None, field: str) -> str | None:
    if v is None:
        return None
    try:
        net = ipaddress.ip_network(v, strict=True)
    except ValueError as e:
        raise ValueError(f"{v!r} is not a CIDR ({e})") from None
    if net.version != 4:
        raise ValueError(f"{v!r}: only IPv4 is supported by this release")
    return str(net)


class NovaNetConfig(_Model):
    nodeName: str = ""
    nodeIP: str | None = None
    clusterCIDR: str = "10.42.0.0/16"
    # Where Service ClusterIPs come from (the API server's --service-cluster-ip-range).
    serviceCIDR: str = "10.96.0.0/12"
    podCIDR: str | None = None
    nodeCIDRMaskSize: int = Field(default=24, ge=16, le=28)
    routingMode: Literal["overlay", "native"] = "overlay"
    tunnelProtocol: str = "vxlan"
    datapath: str = "ebpf"
    mtu: int | Literal["auto"] = "auto"
    underlayInterface: str | None = None
    # true: the datapath translates Services (no kube-proxy); false: kube-proxy translates and the
    # datapath only keeps replies from Service backends on the conntrack path (docs/services.md).
    kubeProxyReplacement: bool = True
    ipam: IpamConfig = Field(default_factory=IpamConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    egress: EgressConfig = Field(default_factory=EgressConfig)
    bpf: BpfConfig = Field(default_factory=BpfConfig)
    sockets: SocketsConfig = Field(default_factory=SocketsConfig)
    warmPool: WarmPoolConfig = Field(default_factory=WarmPoolConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    stateSource: StateSourceConfig = Field(default_factory=StateSourceConfig)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    plugins: PluginsConfig = Field(default_factory=PluginsConfig)
    pluginSettings: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # Where the agent keeps its endpoint records; default: "state" next to the agent socket.
    stateDir: str | None = None
    logLevel: Literal["debug", "info", "warn", "warning", "error"] = "info"

    @field_validator("clusterCIDR")
    @classmethod
    def _cluster(cls, v: str) -> str:
        return _cidr(v, "clusterCIDR") or v

    @field_validator("serviceCIDR")
    @classmethod
    def _service(cls, v: str) -> str:
        return _cidr(v, "serviceCIDR") or v

    @field_validator("podCIDR")
    @classmethod
    def _pod(cls, v: str | None) -> str | None:
        return _cidr(v, "podCIDR")

    @field_validator("nodeIP")
    @classmethod
    def _nodeip(cls, v: str | None) -> str | None:
        if v in (None, ""):
            return None
        try:
            return str(ipaddress.IPv4Address(v))
        except ValueError:
            raise ValueError(f"{v!r} is not an IPv4 address") from None

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

    @model_validator(mode="after")
    def _consistent(self) -> NovaNetConfig:
        if self.podCIDR:
            pod, cluster = ipaddress.ip_network(self.podCIDR), ipaddress.ip_network(self.clusterCIDR)
            if not pod.subnet_of(cluster):  # type: ignore[arg-type]
                raise ValueError(f"podCIDR {self.podCIDR} is not inside clusterCIDR {self.clusterCIDR}")
        if ipaddress.ip_network(self.serviceCIDR).overlaps(ipaddress.ip_network(self.clusterCIDR)):
            raise ValueError(f"serviceCIDR {self.serviceCIDR} overlaps clusterCIDR {self.clusterCIDR}")
        return self
