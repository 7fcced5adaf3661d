"""Hook implementations: registers the ``vxlan`` tunnel backend (``tunnelProtocol: vxlan``)."""

from __future__ import annotations

import logging
import subprocess
from typing import Any

from novanet_core.backends import BackendContext, BackendRegistry
from novanet_core.hookspecs import hookimpl
from novanet_core.types import NodeInfo
from novanet_vxlan import device

log = logging.getLogger(__name__)


class VxlanTunnel:
    name = "vxlan"
    overhead = device.OVERHEAD

    def __init__(self, ctx: BackendContext):
        self.ctx = ctx
        self.ifindex = 0
        self.local: NodeInfo | None = None
        self.remotes: list[NodeInfo] = []

    def _mtu(self, local: NodeInfo) -> int:
        cfg = self.ctx.config
        if isinstance(cfg.mtu, int):
            return cfg.mtu
        from novanet_core.agent.podnet import interface_for_ip, interface_mtu

        dev = cfg.underlayInterface or interface_for_ip(local.ip)
        return ((interface_mtu(dev) if dev else None) or 1500) - self.overhead

    def setup(self, local: NodeInfo) -> None:
        self.local = local
        self.ifindex = device.ensure_device(local.ip, self._mtu(local))
        log.info("vxlan device %s ready (ifindex %d)", device.DEVICE, self.ifindex)

    def sync_nodes(self, local: NodeInfo, remotes: list[NodeInfo]) -> None:
        want = {n.pod_cidr: n for n in remotes}
        for cidr in set(device.routes()) - set(want):
            device.delete_route(cidr)
        for cidr, n in want.items():
            try:
                device.set_route(cidr, n.ip, local.ip)
            except subprocess.CalledProcessError as e:
                log.error("route to %s via node %s failed: %s", cidr, n.name, e.stderr.strip())
        self.remotes = list(remotes)

    def teardown(self) -> None:
        for cidr in device.routes():
            device.delete_route(cidr)
        device.delete_device()

    def status(self) -> list[dict[str, Any]]:
        return [{"node": n.name, "nodeIP": n.ip, "podCIDR": n.pod_cidr, "interface": device.DEVICE,
                 "ifindex": self.ifindex, "protocol": "vxlan", "vni": device.VNI, "port": device.PORT}
                for n in self.remotes]


@hookimpl
def novanet_register_backends(registry: BackendRegistry) -> None:
    registry.add("tunnel", "vxlan", VxlanTunnel,
                 description="shared collect-metadata VXLAN device nvx0 (UDP 4789, learning off)")
