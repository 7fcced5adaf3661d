"""The on-disk state directory, in the layout of the reference CNI ``host-local`` plugin.

* ``<dir>/<ip>``                one file per allocated address; content ``<container id>\\r\\n<ifname>``
* ``<dir>/last_reserved_ip.<n>``  the address handed out last from the n-th range (pool), so
                                allocation continues after it; a dual-stack node has ``.0`` and ``.1``
* ``<dir>/lock``                ``flock``-ed for every read-modify-write, by every process

Keeping the reference layout means ``ls /var/lib/cni/networks/novanet`` reads the same as on
any host-local node, and state written by either side is understood by the other.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from novanet_core.backends import ConfigError, IpamError

LOCK_FILE = "lock"
LAST_RESERVED_PREFIX = "last_reserved_ip."
LAST_RESERVED_FILE = LAST_RESERVED_PREFIX + "0"
TMP_PREFIX = ".novanet-tmp-"
# The reference plugin separates container id and ifname with CRLF; readers accept any line end.
LINE_BREAK = "\r\n"
FILE_MODE = 0o644
# A state file is two short lines; anything much larger is not ours and is not read whole.
MAX_READ = 4096


@dataclass(frozen=True)
class Entry:
    """A file in the state dir whose name is an IP address."""

    ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    file: str
    container_id: str  # "" when the file is empty or unreadable: nobody can be matched to it
    ifname: str  # "" in the legacy format that held only the container id

    @property
    def owned(self) -> bool:
        return self.container_id != ""

    def belongs_to(self, container_id: str, ifname: str) -> bool:
        # A legacy file (container id only) belongs to every interface of that container.
        return self.owned and self.container_id == container_id and self.ifname in (ifname, "")


@dataclass
class Scan:
    entries: list[Entry] = field(default_factory=list)
    # Files that are neither state nor our own bookkeeping: (file name, why it was skipped).
    skipped: list[tuple[str, str]] = field(default_factory=list)


class StateDir:
    def __init__(self, path: str):
        self.path = path
        try:
            os.makedirs(path, mode=0o755, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"ipam.dataDir: cannot create {path!r}: {e.strerror or e}") from None
        if not os.path.isdir(path):
            raise ConfigError(f"ipam.dataDir: {path!r} exists but is not a directory")
        if not os.access(path, os.W_OK | os.X_OK):
            raise ConfigError(f"ipam.dataDir: {path!r} is not writable by this process")

    def _p(self, name: str) -> str:
        return os.path.join(self.path, name)

    # ------------------------------------------------------------------ locking
    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the directory's exclusive lock.

        Every call opens the lock file anew: ``flock`` locks belong to an open file description,
        so two threads (or two backend instances) of one process exclude each other exactly as
        two processes do. Closing the descriptor releases the lock even if the body raised.
        """
        try:
            fd = os.open(self._p(LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        except OSError as e:
            raise IpamError(
                f"ipam.dataDir: cannot open lock file in {self.path!r}: {e.strerror or e}"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # ------------------------------------------------------------------ reading (under the lock)
    def scan(self) -> Scan:
        """Every IP-named file with its owner; anything else is skipped with a reason.

        Also removes temp files: they only exist while a writer holds the lock, so one seen by
        the lock holder was left by a writer that died mid-write.
        """
        out = Scan()
        try:
            listing = list(os.scandir(self.path))
        except OSError as e:
            raise IpamError(f"ipam.dataDir: cannot list {self.path!r}: {e.strerror or e}") from None
        for de in sorted(listing, key=lambda d: d.name):
            name = de.name
            if name == LOCK_FILE or (name.startswith(LAST_RESERVED_PREFIX)
                                     and name[len(LAST_RESERVED_PREFIX):].isdigit()):
                continue
            if name.startswith(TMP_PREFIX):
                self._unlink(name)
                continue
            try:
                ip = ipaddress.ip_address(name)
            except ValueError:
                out.skipped.append((name, "file name is not an IP address"))
                continue
            if name != str(ip):
                out.skipped.append((name, f"not the canonical form of {ip}"))
                continue
            if not de.is_file(follow_symlinks=False):
                out.skipped.append((name, "not a regular file"))
                continue
            container_id, ifname = self._read_owner(name)
            out.entries.append(Entry(ip, name, container_id, ifname))
        return out

    def _read_owner(self, name: str) -> tuple[str, str]:
        try:
            with open(self._p(name), "rb") as f:
                raw = f.read(MAX_READ)
        except OSError:
            return "", ""
        lines = [ln.strip() for ln in raw.decode("utf-8", errors="replace").splitlines()]
        container_id = lines[0] if lines else ""
        # Text with control characters or replacement chars is not something we wrote.
        if not container_id.isprintable() or "\ufffd" in container_id:
            return "", ""
        ifname = lines[1] if len(lines) > 1 and lines[1].isprintable() else ""
        return container_id, ifname

    def read_last_reserved(self, index: int = 0) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        try:
            with open(self._p(f"{LAST_RESERVED_PREFIX}{index}"), "rb") as f:
                text = f.read(64).decode("ascii", errors="replace").strip()
            return ipaddress.ip_address(text)
        except (OSError, ValueError):
            return None  # missing or garbage marker: rotation simply starts at the pool's start

    # ------------------------------------------------------------------ writing (under the lock)
    def _write_temp(self, data: bytes) -> str:
        tmp = TMP_PREFIX + secrets.token_hex(8)
        try:
            fd = os.open(self._p(tmp), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
        except OSError as e:  # read-only or full file system: say which directory and why
            raise IpamError(f"ipam.dataDir: cannot write in {self.path!r}: {e.strerror or e}") from None
        try:
            if os.write(fd, data) != len(data):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            # No fsync (nor of the directory after link/unlink), as the reference plugin: a crash of
            # any process loses nothing the kernel was handed, and what a power loss can lose (a
            # file missing or empty) belongs to pods whose netns died with the node and that the
            # runtime adds again; GC releases an empty file. Three fsyncs per address, 18 ms a
            # pair here and taken in turn under the lock, were the ADD's IPAM step under 20 at once.
        except BaseException as e:
            os.close(fd)
            self._unlink(tmp)
            if isinstance(e, OSError):
                raise IpamError(f"ipam.dataDir: cannot write in {self.path!r}: {e.strerror or e}") from None
            raise
        os.close(fd)
        return tmp

    def _unlink(self, name: str) -> bool:
        try:
            os.unlink(self._p(name))
            return True
        except FileNotFoundError:
            return False

    def create(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address, container_id: str, ifname: str) -> bool:
        """Write ``<ip>`` atomically; False if it already exists (nothing is overwritten).

        Temp file + ``link`` rather than ``rename``: both publish a complete file atomically, but
        ``link`` fails when the name exists, so even a writer that ignores our lock (an old agent,
        the reference plugin on the same dir) can never have its file replaced.
        """
        tmp = self._write_temp((container_id + LINE_BREAK + ifname).encode())
        try:
            os.link(self._p(tmp), self._p(str(ip)))
        except FileExistsError:
            return False
        except OSError as e:
            raise IpamError(f"ipam.dataDir: cannot write {self._p(str(ip))!r}: {e.strerror or e}") from None
        finally:
            self._unlink(tmp)
        return True

    def remove(self, name: str) -> bool:
        try:
            removed = self._unlink(name)
        except OSError as e:
            if e.errno == errno.EISDIR:
                return False
            raise IpamError(f"ipam.dataDir: cannot remove {self._p(name)!r}: {e.strerror or e}") from None
        return removed

    def write_last_reserved(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address, index: int = 0) -> None:
        """Best effort: the marker only spreads allocations out. Failing the allocation over it
        (a full disk after the address file was written) would leave that address allocated to a
        pod the caller was told does not exist."""
        try:
            tmp = self._write_temp(str(ip).encode())
        except IpamError:
            return
        try:
            os.replace(self._p(tmp), self._p(f"{LAST_RESERVED_PREFIX}{index}"))
        except OSError:
            self._unlink(tmp)
