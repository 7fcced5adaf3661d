"""``HostLocalIpam``: the :class:`novanet_core.backends.IpamBackend` over a :class:`StateDir`.

Every operation is one read-modify-write under the directory lock, and the directory is the
only state: a new instance (agent restart, another process) sees exactly what the last one left.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import Any

from novanet_core.backends import ConfigError, IpamError, PoolExhausted
from novanet_core.types import Attachment, IpamAddress, IpamAllocation, IpamRequest
from novanet_host_local_ipam.pool import Address, Pool
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
    """Pod addresses from the node's PodCIDRs (one pool per family), one file per IP under
    ``data_dir``. An attachment gets one address of every pool, all or none."""

    def __init__(self, pools: Pool | Sequence[Pool], data_dir: str = DEFAULT_DATA_DIR):
        self.pools: list[Pool] = [pools] if isinstance(pools, Pool) else list(pools)
        if not self.pools or len({p.version for p in self.pools}) != len(self.pools):
            raise ConfigError("podCIDR: the host-local IPAM backend needs one pool per IP family")
        self.pool = self.pools[0]  # the primary family's
        self.store = StateDir(data_dir)

    @property
    def data_dir(self) -> str:
        return self.store.path

    def _pool_of(self, ip: Address) -> tuple[int, Pool] | None:
        return next(((i, p) for i, p in enumerate(self.pools) if p.assignable(ip)), None)

    def _assignable(self, ip: Address) -> bool:
        return self._pool_of(ip) is not None

    def _addr(self, ip: Address) -> IpamAddress:
        # Addresses left over from an earlier PodCIDR have no gateway in the current pools.
        found = self._pool_of(ip)
        if found is None:
            pool = next((p for p in self.pools if p.version == ip.version), None)
            return IpamAddress(str(ip), pool.prefix_len if pool else ip.max_prefixlen, "")
        return IpamAddress(str(ip), found[1].prefix_len, str(found[1].gateway))

    def _alloc(self, cid: str, ifname: str, ips: Sequence[Address]) -> IpamAllocation:
        addrs = [self._addr(ip) for ip in ips]
        first = addrs[0]
        return IpamAllocation(cid, ifname, first.address, first.prefix_len, first.gateway, addresses=addrs)

    def _parse_requested(self, address: str) -> dict[int, Address]:
        """``address`` is one address or one per family (``a,b``); each must fit its family's pool."""
        out: dict[int, Address] = {}
        for raw in address.split(","):
            try:
                ip = ipaddress.ip_address(raw.strip())
            except ValueError:
                raise IpamError(f"address: {raw.strip()!r} is not an IP address") from None
            pool = next((p for p in self.pools if p.version == ip.version), None)
            if pool is None:
                raise IpamError(f"address: {ip} is IPv{ip.version} but this node has no IPv{ip.version} pool "
                                f"({', '.join(p.cidr for p in self.pools)})")
            if ip.version in out:
                raise IpamError(f"address: {address!r} asks for two IPv{ip.version} addresses")
            why = pool.why_not_assignable(ip)
            if why:
                raise IpamError(f"address: {ip} cannot be assigned to a pod: {why}")
            out[ip.version] = ip
        return out

    # ------------------------------------------------------------------ IpamBackend
    def allocate(self, request: IpamRequest) -> IpamAllocation:
        cid, ifname = _check_attachment(request.container_id, request.ifname)
        requested = self._parse_requested(request.address) if request.address else {}
        with self.store.locked():
            scan = self.store.scan()
            used = {e.ip: e for e in scan.entries}
            got: list[Address] = []
            created: list[Address] = []
            try:
                for index, pool in enumerate(self.pools):
                    ip, new = self._allocate_from(index, pool, scan.entries, used, cid, ifname,
                                                  requested.get(pool.version))
                    got.append(ip)
                    if new:
                        created.append(ip)
            except IpamError:
                # All families or none: a pod with half its addresses would be a half-made pod.
                for ip in created:
                    self.store.remove(str(ip))
                raise
        return self._alloc(cid, ifname, got)

    def _allocate_from(self, index: int, pool: Pool, entries: list[Entry], used: dict[Address, Entry], cid: str,
                       ifname: str, requested: Address | None) -> tuple[Address, bool]:
        """The attachment's address in ``pool``, and whether it was made now."""
        mine = [e for e in entries if e.belongs_to(cid, ifname) and pool.assignable(e.ip)]
        if mine:
            have = mine[0]
            if requested is not None and requested != have.ip:
                raise IpamError(
                    f"address: container {cid} interface {ifname} already has {have.ip}; "
                    f"release it before asking for {requested}"
                )
            return have.ip, False
        if requested is not None:
            if requested in used or not self.store.create(requested, cid, ifname):
                raise IpamError(f"address: {requested} is already allocated ({self._describe(used.get(requested))})")
            self.store.write_last_reserved(requested, index)
            return requested, True
        for ip in pool.rotation(self.store.read_last_reserved(index)):
            # create() is False only if a writer that ignores our lock got there first.
            if ip not in used and self.store.create(ip, cid, ifname):
                self.store.write_last_reserved(ip, index)
                return ip, True
        reserved = "network, gateway and broadcast are" if pool.version == 4 else "network and gateway are"
        raise PoolExhausted(
            f"IPAM pool {pool.cidr} is exhausted: all {pool.capacity} assignable addresses "
            f"are allocated ({reserved} reserved; gateway {pool.gateway}); "
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
            entries = self.store.scan().entries
        ips = []
        for pool in self.pools:
            ips += [e.ip for e in entries if e.belongs_to(cid, ifname) and pool.assignable(e.ip)][:1]
        return self._alloc(cid, ifname, ips) if ips else None

    def list(self) -> list[IpamAllocation]:
        """One allocation per address file (a dual-stack attachment is listed once per family)."""
        with self.store.locked():
            entries = self.store.scan().entries
        return [
            self._alloc(e.container_id, e.ifname, [e.ip])
            for e in sorted(entries, key=_order)
            if e.owned and self._assignable(e.ip)
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
            for e in sorted(self.store.scan().entries, key=_order):
                if any(e.belongs_to(cid, ifname) for cid, ifname in keep):
                    continue
                if self.store.remove(e.file):
                    released.append(self._alloc(e.container_id, e.ifname, [e.ip]))
        return released

    def status(self) -> dict[str, Any]:
        """The primary pool's figures at the top level (as before dual-stack), every pool under
        ``pools``; ``capacity``/``allocated``/``free`` are those of the fullest pool, so that
        "allocated >= capacity" still means no attachment can be added."""
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
                lasts = [self.store.read_last_reserved(i) for i in range(len(self.pools))]
        except IpamError as e:
            out.update(ready=False, error=str(e), allocated=0, free=0, foreign=[])
            return out
        foreign: list[dict[str, str]] = [{"file": f, "reason": r} for f, r in scan.skipped]
        per = [{"cidr": p.cidr, "gateway": str(p.gateway), "capacity": p.capacity, "allocated": 0, "free": p.capacity,
                "lastReserved": str(last) if last else None} for p, last in zip(self.pools, lasts, strict=True)]
        for e in scan.entries:
            found = self._pool_of(e.ip)
            if found is not None:
                row = per[found[0]]
                row["free"] -= 1
                if e.owned:
                    row["allocated"] += 1
                else:
                    foreign.append(
                        {"file": e.file, "reason": "empty or unreadable content (address held until GC)"}
                    )
            else:
                same = next((p for p in self.pools if p.version == e.ip.version), None)
                why = (same.why_not_assignable(e.ip) if same is not None
                       else f"IPv{e.ip.version} address; this node has no IPv{e.ip.version} pool")
                owner = (
                    f"container {e.container_id} interface {e.ifname or '?'}" if e.owned else "no container"
                )
                foreign.append({"file": e.file, "reason": f"{why}; owner: {owner}"})
        fullest = min(per, key=lambda r: r["free"])
        out.update(
            capacity=fullest["capacity"],
            allocated=fullest["allocated"],
            free=fullest["free"],
            lastReserved=per[0]["lastReserved"],
            pools=per,
            foreign=sorted(foreign, key=lambda f: f["file"]),
        )
        return out


def _order(e: Entry) -> tuple[int, int]:
    return e.ip.version, int(e.ip)
