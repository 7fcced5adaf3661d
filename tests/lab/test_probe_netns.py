"""The probe engine and pod server against real netns and a real veth, without any NovaNet agent.

Two namespaces joined by a veth (an address per family): the server runs novanet_lab.podserver;
an nftables rule in the server netns drops port 81, which is how a policy drop looks to the prober.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from novanet_lab import netns, procs
from novanet_lab.probe import Endpoint, probe_matrix
from novanet_lab.sctp import probe_sctp
from pyroute2 import IPRoute

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.lab]

IFA_F_NODAD = 0x02  # an address usable at once, not tentative while DAD runs


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Endpoint, Endpoint]]:
    tag = f"lp{os.getpid()}{secrets.token_hex(2)}"
    cli, srv = f"{tag}.cli", f"{tag}.srv"
    pids: list[int] = []
    try:
        netns.create(cli)
        netns.create(srv)
        with IPRoute(netns=cli) as ipr:
            ipr.link("add", ifname="eth0", kind="veth", peer={"ifname": "eth0", "net_ns_fd": srv})
            i = ipr.link_lookup(ifname="eth0")[0]
            ipr.addr("add", index=i, address="10.251.0.1", prefixlen=24)
            ipr.addr("add", index=i, address="fd00:251::1", prefixlen=64, flags=IFA_F_NODAD)
            ipr.link("set", index=i, state="up")
        with IPRoute(netns=srv) as ipr:
            i = ipr.link_lookup(ifname="eth0")[0]
            ipr.addr("add", index=i, address="10.251.0.2", prefixlen=24)
            ipr.addr("add", index=i, address="fd00:251::2", prefixlen=64, flags=IFA_F_NODAD)
            ipr.link("set", index=i, state="up")
        ready = tmp_path / "ready"
        pid = procs.start_in_netns(
            [sys.executable, "-m", "novanet_lab.podserver", "--name", "s/srv", "--tcp", "80", "--tcp", "81",
             "--udp", "80", "--udp", "81", "--ready-file", str(ready)],
            srv, tmp_path / "server.log", tmp_path / "server.pid")
        pids.append(pid)
        deadline = time.monotonic() + 20
        while not ready.exists():
            assert procs.is_running(pid), (tmp_path / "server.log").read_text()
            assert time.monotonic() < deadline, "pod server never became ready"
            time.sleep(0.02)
        if shutil.which("nft"):
            rules = ("table inet lab { chain in { type filter hook input priority 0; tcp dport 81 drop; udp dport 81 drop; "
                     "sctp dport 81 drop; }; }")
            subprocess.run(["nsenter", f"--net=/run/netns/{srv}", "nft", "-f", "-"], input=rules.encode(), check=True)
        yield Endpoint("c/cli", "10.251.0.1", cli), Endpoint("s/srv", "10.251.0.2", srv)
    finally:
        procs.terminate(pids, grace=2)
        for n in (cli, srv):
            netns.remove(n)


def results(src: Endpoint, dst: Endpoint, checks: list[tuple[int, str]], timeout: float = 0.3, **kw: float) -> dict:
    return {(r.port, r.protocol): r for r in probe_matrix([src], [dst], checks, timeout, **kw)}


def test_allowed_refused_dropped(pair: tuple[Endpoint, Endpoint]) -> None:
    cli, srv = pair
    got = results(cli, srv, [(80, "TCP"), (80, "UDP"), (81, "TCP"), (81, "UDP"), (82, "TCP"), (82, "UDP")])
    assert (got[(80, "TCP")].allowed, got[(80, "TCP")].reason) == (True, "connected")
    assert (got[(80, "UDP")].allowed, got[(80, "UDP")].reason) == (True, "echoed")
    assert (got[(82, "TCP")].allowed, got[(82, "TCP")].reason) == (False, "refused")
    assert (got[(82, "UDP")].allowed, got[(82, "UDP")].reason) == (False, "refused")
    if shutil.which("nft"):
        assert (got[(81, "TCP")].allowed, got[(81, "TCP")].reason) == (False, "timeout")
        assert (got[(81, "UDP")].allowed, got[(81, "UDP")].reason) == (False, "timeout")


# Answers every connection 0.4 s late: after the first 0.3 s attempt gave up, within the 0.6 s
# second one. One thread per connection, so that the late first attempt does not hold up the second.
SLOW_SERVER = """
import pathlib, socket, sys, threading, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 84))
s.listen(16)
pathlib.Path(sys.argv[1]).touch()
def late(c):
    time.sleep(0.4)
    try:
        c.sendall(b"s/srv\\n")
    except OSError:
        pass
    c.close()
while True:
    threading.Thread(target=late, args=(s.accept()[0],), daemon=True).start()
"""


def test_late_reply_is_confirmed_not_reported_as_a_drop(pair: tuple[Endpoint, Endpoint], tmp_path: Path) -> None:
    cli, srv = pair
    ready = tmp_path / "slow.ready"
    pid = procs.start_in_netns([sys.executable, "-c", SLOW_SERVER, str(ready)], srv.netns, tmp_path / "slow.log",
                               tmp_path / "slow.pid")
    try:
        deadline = time.monotonic() + 20
        while not ready.exists():
            assert procs.is_running(pid) and time.monotonic() < deadline, (tmp_path / "slow.log").read_text()
            time.sleep(0.02)
        once = results(cli, srv, [(84, "TCP")], confirm_timeout=0)[(84, "TCP")]
        assert (once.allowed, once.reason) == (False, "timeout")
        twice = results(cli, srv, [(84, "TCP")])[(84, "TCP")]
        assert (twice.allowed, twice.reason) == (True, "connected")
        assert twice.ms >= 400 + 300 * 0.9, twice  # first attempt's deadline plus the server's delay
    finally:
        procs.terminate([pid], grace=2)


def test_reply_must_name_the_target(pair: tuple[Endpoint, Endpoint]) -> None:
    cli, srv = pair
    impostor = Endpoint("s/other", srv.ip, srv.netns)
    got = results(cli, impostor, [(80, "TCP"), (80, "UDP")])
    assert not got[(80, "TCP")].allowed and got[(80, "TCP")].reason.startswith("wrong-pod: s/srv")
    assert not got[(80, "UDP")].allowed and got[(80, "UDP")].reason.startswith("wrong-pod: s/srv")


def test_absent_host_times_out(pair: tuple[Endpoint, Endpoint]) -> None:
    cli, _ = pair
    ghost = Endpoint("s/ghost", "10.251.0.99", "unused")
    got = results(cli, ghost, [(80, "TCP"), (80, "UDP")])
    assert all(not r.allowed and r.reason in ("timeout", "unreachable") for r in got.values())


def test_many_sources_in_parallel(pair: tuple[Endpoint, Endpoint]) -> None:
    # The same source several times over: each thread setns()es on its own; results stay in order.
    cli, srv = pair
    sources = [Endpoint(f"c/cli{i}", cli.ip, cli.netns) for i in range(6)]
    rs = probe_matrix(sources, [srv], [(80, "TCP"), (80, "UDP")])
    assert [r.src for r in rs] == [s.key for s in sources for _ in range(2)]
    assert all(r.allowed for r in rs)


def test_broken_source_is_reported_not_raised(pair: tuple[Endpoint, Endpoint]) -> None:
    _, srv = pair
    rs = probe_matrix([Endpoint("c/gone", "10.251.0.7", "no-such-netns-zz")], [srv], [(80, "TCP")])
    assert len(rs) == 1 and not rs[0].allowed and rs[0].reason.startswith("error:")


def test_sctp_inits_arrive_in_each_family(pair: tuple[Endpoint, Endpoint]) -> None:
    """The crafted INIT leaves through a raw socket of the target's family; the IPv6 receiver,
    whose raw socket gets no IP header, takes the source from the peer address."""
    cli, srv = pair
    cli6, srv6 = Endpoint(cli.key, "fd00:251::1", cli.netns), Endpoint(srv.key, "fd00:251::2", srv.netns)
    for src, dst in ((cli, srv), (cli6, srv6)):
        got = {r.port: r for r in probe_sctp([src], [dst], [80, 81], 0.3)}
        assert (got[80].allowed, got[80].reason) == (True, "sctp-init-arrived"), dst.ip
        if shutil.which("nft"):
            assert (got[81].allowed, got[81].reason) == (False, "sctp-init-not-received"), dst.ip
