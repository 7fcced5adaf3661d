"""What a lab has made, kept in ``state.json`` and rewritten (atomically) after every step.

``down`` reads it to undo things in order (CNI DEL needs each pod's ADD result), but it never
depends on it: a missing or corrupt file only loses the DELs; everything else is found by name.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from novanet_lab.paths import LabPaths


class PortState(BaseModel):
    port: int
    protocol: str = "TCP"
    name: str | None = None


class NodeState(BaseModel):
    name: str
    netns: str
    ip: str  # the primary family's underlay address (ips[0])
    podCIDR: str  # the primary family's PodCIDR (podCIDRs[0])
    config: str
    ips: list[str] = Field(default_factory=list)  # one per underlay family, primary first
    podCIDRs: list[str] = Field(default_factory=list)  # one per family of clusterCIDR, primary first
    agentPid: int | None = None
    dataplanePid: int | None = None


class PodState(BaseModel):
    namespace: str
    name: str
    node: str
    netns: str
    containerId: str
    labels: dict[str, str] = Field(default_factory=dict)
    ports: list[PortState] = Field(default_factory=list)
    ip: str | None = None  # the primary family's address (ips[0])
    ips: list[str] = Field(default_factory=list)  # one per family, as the CNI result lists them
    cniResult: dict[str, Any] | None = None
    serverPid: int | None = None
    ready: bool = True  # the Ready condition the lab reports for it
    server: str = "podserver"  # or "dns" (novanet_lab.dns)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def port_dicts(self) -> list[dict[str, Any]]:
        return [p.model_dump() for p in self.ports]


class UnderlayState(BaseModel):
    netns: str
    cidr: str  # one range per family, comma-separated
    gateway: str  # the bridge's address in the primary family
    mtu: int
    gateways: list[str] = Field(default_factory=list)  # per family


class OutsideState(BaseModel):
    netns: str
    address: str  # the host "on the internet" (primary family)
    ip: str  # its underlay address: the nodes' default gateway (primary family)
    addresses: list[str] = Field(default_factory=list)  # per family
    ips: list[str] = Field(default_factory=list)  # per underlay family
    serverPid: int | None = None
    ports: list[PortState] = Field(default_factory=list)


class LabState(BaseModel):
    name: str
    phase: str = "creating"  # creating -> up; a crash leaves "creating"
    specFile: str | None = None
    spec: dict[str, Any] = Field(default_factory=dict)
    createdAt: float = Field(default_factory=time.time)
    underlay: UnderlayState | None = None
    outside: OutsideState | None = None
    nodes: dict[str, NodeState] = Field(default_factory=dict)
    namespaces: dict[str, dict[str, str]] = Field(default_factory=dict)  # name -> labels
    pods: dict[str, PodState] = Field(default_factory=dict)  # "ns/name" -> pod
    policies: list[str] = Field(default_factory=list)  # "ns/name"
    # "ns/name" -> the Service as stored (ClusterIP and nodePorts allocated).
    services: dict[str, dict[str, Any]] = Field(default_factory=dict)
    endpointSlices: list[str] = Field(default_factory=list)  # "ns/name" of slices applied by the user
    manifestVersion: int = 0


def save(paths: LabPaths, state: LabState) -> None:
    paths.state_dir.mkdir(parents=True, exist_ok=True)
    tmp = paths.state_file.with_name(".state.json.tmp")
    tmp.write_text(state.model_dump_json(indent=1))
    os.replace(tmp, paths.state_file)


def load(paths: LabPaths) -> LabState | None:
    """The saved state, or None when there is none or it cannot be read (a crash mid-write)."""
    try:
        raw = json.loads(Path(paths.state_file).read_text())
        return LabState.model_validate(raw)
    except (OSError, ValueError, ValidationError):
        return None
