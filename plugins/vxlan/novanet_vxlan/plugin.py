"""Hook implementations: registers the ``vxlan`` tunnel backend (``tunnelProtocol: vxlan``).

Two modes, chosen by ``pluginSettings.vxlan.bpf`` (``auto``: on unless ``datapath: kernel``):

* BPF (with a datapath that calls the core tunnel hook, e.g. ``datapath: ebpf``): the encap
  program sits in the core ``tunnel_progs`` slot and the ingress program on nvx0; this backend
  writes the shared ``tunnels`` entries (remote node IP -> nvx0, VNI).
* routes only (``datapath: kernel``): per-remote-PodCIDR lightweight-tunnel routes via nvx0.

The routes are installed in both modes: with BPF they carry the node's own traffic to remote pods.
"""

from __future__ import annotations

import ctypes
import ipaddress
import logging
import os
import subprocess
import threading
import weakref
from typing import Any

from novanet_core.backends import BackendContext, BackendRegistry, ConfigError
from novanet_core.bpf import bpffs, layouts_c, syscall
from novanet_core.bpf.layouts import TunnelKey, TunnelValue
from novanet_core.hookspecs import hookimpl
from novanet_core.types import NodeInfo
from novanet_vxlan import device, program

log = logging.getLogger(__name__)


def _num(ip: str) -> int:
    return int(ipaddress.IPv4Address(ip))


class VxlanTunnel:
    name = "vxlan"
    overhead = device.OVERHEAD

    def __init__(self, ctx: BackendContext):
        self.ctx = ctx
        cfg = ctx.config
        mode = str(cfg.pluginSettings.get("vxlan", {}).get("bpf", "auto")).lower()
        if mode not in ("auto", "on", "off", "true", "false"):
            raise ConfigError(f"pluginSettings.vxlan.bpf: {mode!r} is not auto, on or off")
        self.bpf = mode in ("on", "true") or (mode == "auto" and cfg.datapath != "kernel")
        self.root = cfg.bpf.root
        self.ifindex = 0
        self.local: NodeInfo | None = None
        self.remotes: list[NodeInfo] = []
        self.installed: dict[str, Any] = {}
        self._lock = threading.Lock()

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
        if self.bpf:
            if self.root.startswith(bpffs.BPFFS):
                bpffs.ensure_mounted()
            bpffs.ensure_dir(self.root)
            os.makedirs(os.path.join(self.root, "maps"), exist_ok=True)
            loaded = program.load(self.root, self.ctx.config.bpf.headerTree)
            try:
                self.installed = program.install(self.root, loaded, self.ifindex)
            finally:
                loaded.close()  # the slot, the pinned link and the pins hold the programs now
        log.info("vxlan device %s ready (ifindex %d, bpf %s)", device.DEVICE, self.ifindex, self.bpf)

    def sync_nodes(self, local: NodeInfo, remotes: list[NodeInfo]) -> None:
        with self._lock:
            if self.bpf:
                self._sync_tunnels(remotes)
            want = {n.pod_cidr: n for n in remotes}
            for cidr in set(device.routes()) - set(want):
                device.delete_route(cidr)
            for cidr, n in want.items():
                try:
                    device.set_route(cidr, n.ip, local.ip)
                except subprocess.CalledProcessError as e:
                    log.error("route to %s via node %s failed: %s", cidr, n.name, e.stderr.strip())
            self.remotes = sorted(remotes, key=lambda n: n.name)

    def _sync_tunnels(self, remotes: list[NodeInfo]) -> None:
        want = {_num(n.ip) for n in remotes}
        fd = syscall.obj_get(layouts_c.pin_path(self.root, "tunnels"))
        try:
            for ip in want:
                v = TunnelValue(ifindex=self.ifindex, remote_ip=ip, vni=device.VNI)
                syscall.map_update(fd, bytes(TunnelKey(node_ip=ip)), bytes(v))
            for k in list(syscall.map_keys(fd, ctypes.sizeof(TunnelKey))):
                if TunnelKey.from_buffer_copy(k).node_ip not in want:
                    syscall.map_delete(fd, k)
        finally:
            os.close(fd)

    def teardown(self) -> None:
        with self._lock:
            if self.bpf:
                self._sync_tunnels([])
                program.uninstall(self.root)
            for cidr in device.routes():
                device.delete_route(cidr)
            device.delete_device()

    def status(self) -> list[dict[str, Any]]:
        return [{"node": n.name, "nodeIP": n.ip, "podCIDR": n.pod_cidr, "interface": device.DEVICE,
                 "ifindex": self.ifindex, "protocol": "vxlan", "vni": device.VNI, "port": device.PORT,
                 "overhead": self.overhead} for n in self.remotes]

    def counters(self) -> dict[str, Any]:
        return {"device": device.DEVICE, "ifindex": self.ifindex, "bpf": self.bpf, "programs": self.installed,
                "counters": program.stats(self.root) if self.bpf else {}}


_active: weakref.ref[VxlanTunnel] | None = None


def create_backend(ctx: BackendContext) -> VxlanTunnel:
    global _active
    b = VxlanTunnel(ctx)
    _active = weakref.ref(b)
    return b


@hookimpl
def novanet_register_backends(registry: BackendRegistry) -> None:
    registry.add("tunnel", "vxlan", create_backend,
                 description="shared collect-metadata VXLAN device nvx0 (UDP 4789, learning off)")


@hookimpl
def novanet_register_api(router: Any, component: str) -> None:
    if component != "agent":
        return
    from novanet_core.api.protocol import ApiError

    def status(p: dict[str, Any]) -> dict[str, Any]:
        """nvx0, BPF mode, the programs and their per-event packet counters."""
        b = _active() if _active else None
        if b is None:
            raise ApiError("unavailable", "the vxlan tunnel backend is not active in this agent")
        return {**b.counters(), "tunnels": b.status()}

    router.add("vxlan.status", status)
