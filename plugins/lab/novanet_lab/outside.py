"""The lab's host outside the cluster: netns ``<lab>.outside`` with ``outside.address`` on its
loopback, cabled to the underlay; the nodes' default route points at it.

It runs the pod server (TCP 80 and 443, UDP 7), so "can a pod reach the internet" is a real
connection to a real address outside every cluster CIDR. It has no route back to pod addresses:
an answer reaches a pod only when its node rewrote the source (``egress.masqueradeEnabled``),
which is the guide's "No External Connectivity" case.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

from novanet_core import ipfamily
from novanet_lab import netns, procs
from novanet_lab.addressing import highest_free
from novanet_lab.errors import LabError
from novanet_lab.paths import LabPaths
from novanet_lab.spec import LabSpec
from novanet_lab.state import OutsideState, PortState

PORTS = [PortState(port=80, protocol="TCP"), PortState(port=443, protocol="TCP"), PortState(port=7, protocol="UDP")]


def ready_file(paths: LabPaths) -> str:
    return str(paths.run_dir / "outside.ready")


def build(paths: LabPaths, spec: LabSpec, used: set[str], progress: Callable[[str], None]) -> OutsideState:
    """Its underlay address per family: ``outside.ip``'s entry of that family, else the highest free one."""
    assert spec.outside.address is not None
    given = ipfamily.split(spec.outside.ip)
    ips = [ipfamily.pick(given, ipfamily.family_of(c)) or highest_free(c, used) for c in spec.underlay.cidrs]
    addresses = ipfamily.split(spec.outside.address)
    st = OutsideState(netns=paths.outside_netns, address=addresses[0], ip=ips[0], ports=list(PORTS),
                      addresses=addresses, ips=ips)
    progress(f"outside {st.netns}: {', '.join(addresses)} (underlay {', '.join(ips)}, the nodes' default route)")
    netns.build_outside(paths.underlay_netns, st.netns, netns.on_underlay(ips, spec.underlay.cidrs),
                        spec.underlay.mtu, addresses)
    argv = [sys.executable, "-m", "novanet_lab.podserver", "--name", "outside", "--ready-file", ready_file(paths)]
    for port in st.ports:
        argv += [f"--{port.protocol.lower()}", str(port.port)]
    st.serverPid = procs.start_in_netns(argv, st.netns, paths.outside_log, paths.outside_pid)
    return st


def wait_ready(paths: LabPaths, st: OutsideState, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(ready_file(paths)):
        if not procs.is_running(st.serverPid):
            procs.reap()
            raise LabError(f"outside: its server exited; {paths.outside_log}:\n{procs.log_tail(paths.outside_log)}")
        if time.monotonic() > deadline:
            raise LabError(f"outside: server not listening after {timeout:.0f} s")
        time.sleep(0.02)
