"""pyroute2's ``IPRoute`` and ``NetlinkError``, imported when first used.

Importing the pyroute2 package loads all of it (0.44 CPU-s measured here, a third of a
``novanetctl`` run), and the plugin host imports every backend's module to collect its hooks, so
every ``novanetctl`` and ``novanet`` command paid it although listing a command or asking the
agent over its socket sends no netlink request. Modules that do talk netlink write
``netlink.IPRoute()`` and ``except netlink.NetlinkError`` instead of importing pyroute2 at the top;
an ``except`` clause evaluates its class only when an exception reaches it.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "IPRoute":
        from pyroute2 import IPRoute

        return IPRoute
    if name == "NetlinkError":
        from pyroute2.netlink.exceptions import NetlinkError

        return NetlinkError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
