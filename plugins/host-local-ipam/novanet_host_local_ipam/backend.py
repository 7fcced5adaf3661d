"""``HostLocalIpam``: the :class:`novanet_core.backends.IpamBackend` over a :class:`StateDir`.

Every operation is one read-modify-write under the directory lock, and the directory is the
only state: a new instance (agent restart, another process) sees exactly what the last one left.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from novanet_core.backends import IpamError, PoolExhausted
from novanet_core.types import Attachment, IpamAllocation, IpamRequest
from novanet_host_local_ipam.pool import Pool
from novanet_host_local_ipam.store import Entry, StateDir

DEFAULT_DATA_DIR = "/var/lib/cni/networks/novanet"
IFNAMSIZ = 16  # kernel limit including the trailing NUL


def _check_attachment(container_id: str, ifname: str) -> tuple[str, str]:
    """Validate the attachment key; the state file format cannot carry line breaks."""
    cid = (container_id or "").strip()
    if not cid:
        raise IpamError("container_id: must not be empty")
    if not cid.isprintable():
        raise IpamError(f"container_id: {container_id!r} contains control characters or line breaks")
    if not ifname:
        raise IpamError("ifname: must not be empty")
    if len(ifname) >= IFNAMSIZ or not ifname.isprintable() or any(c.isspace() or c == "/" for c in ifname):
        raise IpamError(
            f"ifname: {ifname!r} is not a valid interface name (1-{IFNAMSIZ - 1} characters, no spaces or '/')"
        )
    return cid, ifname


class HostLocalIpam:
    """Pod addresses from one node PodCIDR, one file per IP under ``data_dir``."""

    def __init__(self, pool: Pool, data_dir: str = DEFAULT_DATA_DIR):
        self.pool = pool
        self.store = StateDir(data_dir)

    @property
    def data_dir(self) -> str:
        return self.store.path

    def _alloc(self, e: Entry) -> IpamAllocation:
        # Addresses left over from an earlier PodCIDR have no gateway in the current pool.
        gateway = str(self.pool.gateway) if self.pool.assignable(e.ip) else ""
        return IpamAllocation(e.container_id, e.ifname, str(e.ip), self.pool.prefix_len, gateway)

    def _parse_requested(self, address: str) -> ipaddress.IPv4Address:
        try:
            ip = ipaddress.ip_address(address.strip())
        except ValueError:
            raise IpamError(f"address: {address!r} is not an IP address") from None
        if not isinstance(ip, ipaddress.IPv4Address):
            raise IpamError(f"address: {address!r} is IPv6; pool {self.pool.cidr} is IPv4")
        why = self.pool.why_not_assignable(ip)
        if why:
            raise IpamError(f"address: {ip} cannot be assigned to a pod: {why}")
        return ip

    # ------------------------------------------------------------------ IpamBackend
    def allocate(self, request: IpamRequest) -> IpamAllocation:
        cid, ifname = _check_attachment(request.container_id, request.ifname)
        requested = self._parse_requested(request.address) if request.address else None
        with self.store.locked():
            scan = self.store.scan()
            mine = [e for e in scan.entries if e.belongs_to(cid, ifname) and self.pool.assignable(e.ip)]
            if mine:
                have = mine[0]
                if requested is not None and requested != have.ip:
                    raise IpamError(
                        f"address: container {cid} interface {ifname} already has {have.ip}; "
                        f"release it before asking for {requested}"
                    )
                return self._alloc(Entry(have.ip, have.file, cid, ifname))
            used = {e.ip: e for e in scan.entries}
            if requested is not None:
                if requested in used or not self.store.create(requested, cid, ifname):
                    raise IpamError(
                        f"address: {requested} is already allocated ({self._describe(used.get(requested))})"
                    )
                self.store.write_last_reserved(requested)
                return self._alloc(Entry(requested, str(requested), cid, ifname))
            for ip in self.pool.rotation(self.store.read_last_reserved()):
                # create() is False only if a writer that ignores our lock got there first.
                if ip not in used and self.store.create(ip, cid, ifname):
                    self.store.write_last_reserved(ip)
                    return self._alloc(Entry(ip, str(ip), cid, ifname))
        raise PoolExhausted(
            f"IPAM pool {self.pool.cidr} is exhausted: all {self.pool.capacity} assignable addresses "
            f"are allocated (network, gateway {self.pool.gateway} and broadcast are reserved); "
            f"no address for container {cid} interface {ifname}. Release stale allocations "
            f"(the agent's IPAM GC) or give the node a larger podCIDR"
        )

    def _describe(self, e: Entry | None) -> str:
        if e is None:
            return "by a writer outside this backend"
        if not e.owned:
            return f"state file {self.store.path}/{e.file} exists but names no container"
        return f"to container {e.container_id} interface {e.ifname or '?'}"

    def release(self, container_id: str, ifname: str) -> list[str]:
        cid, ifname = _check_attachment(container_id, ifname)
        released: list[str] = []
        with self.store.locked():
            for e in self.store.scan().entries:
                # Out-of-pool addresses of the attachment go too: it is leaving, nothing else holds them.
                if e.belongs_to(cid, ifname) and self.store.remove(e.file):
                    released.append(str(e.ip))
        return released

    def get(self, container_id: str, ifname: str) -> IpamAllocation | None:
        cid, ifname = _check_attachment(container_id, ifname)
        with self.store.locked():
            for e in self.store.scan().entries:
                if e.belongs_to(cid, ifname) and self.pool.assignable(e.ip):
                    return self._alloc(Entry(e.ip, e.file, cid, ifname))
        return None

    def list(self) -> list[IpamAllocation]:
        with self.store.locked():
            entries = self.store.scan().entries
        return [
            self._alloc(e)
            for e in sorted(entries, key=lambda e: e.ip)
            if e.owned and self.pool.assignable(e.ip)
        ]

    def gc(self, valid: Iterable[Attachment]) -> list[IpamAllocation]:
        """Release every file whose attachment is not in ``valid`` (CNI ``cni.dev/valid-attachments``).

        Out-of-pool files (an earlier PodCIDR) and files that name no container are released too
        unless a valid attachment owns them: this is what stops the leak of the original
        implementation, whose files outlived pods deleted while the agent was down.
        """
        keep = {(a.container_id.strip(), a.ifname) for a in valid}
        released: list[IpamAllocation] = []
        with self.store.locked():
            for e in sorted(self.store.scan().entries, key=lambda e: e.ip):
                if any(e.belongs_to(cid, ifname) for cid, ifname in keep):
                    continue
                if self.store.remove(e.file):
                    released.append(self._alloc(e))
        return released

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ready": True,
            "type": "host-local",
            "pool": self.pool.cidr,
            "gateway": str(self.pool.gateway),
            "dataDir": self.store.path,
            "capacity": self.pool.capacity,
        }
        try:
            with self.store.locked():
                scan = self.store.scan()
                last = self.store.read_last_reserved()
        except IpamError as e:
            out.update(ready=False, error=str(e), allocated=0, free=0, foreign=[])
            return out
        foreign: list[dict[str, str]] = [{"file": f, "reason": r} for f, r in scan.skipped]
        allocated = occupied = 0
        for e in scan.entries:
            why = self.pool.why_not_assignable(e.ip)
            if why is None:
                occupied += 1
                if e.owned:
                    allocated += 1
                else:
                    foreign.append(
                        {"file": e.file, "reason": "empty or unreadable content (address held until GC)"}
                    )
            else:
                owner = (
                    f"container {e.container_id} interface {e.ifname or '?'}" if e.owned else "no container"
                )
                foreign.append({"file": e.file, "reason": f"{why}; owner: {owner}"})
        out.update(
            allocated=allocated,
            free=self.pool.capacity - occupied,
            lastReserved=str(last) if last else None,
            foreign=sorted(foreign, key=lambda f: f["file"]),
        )
        return out
