"""frr-bgp against a real FRR (zebra+bgpd+bfdd in a netns): apply, no-op re-apply, rollback."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import stat
import subprocess

import pytest
from novanet_frr_bgp import backend as backend_module
from novanet_frr_bgp import frrconf
from novanet_frr_bgp.backend import FrrBgpRouting
from novanet_lab import frr, netns, procs
from novanet_lab.paths import LabPaths

from novanet_core.backends import BackendContext
from novanet_core.config.models import NovaNetConfig
from novanet_core.types import NodeInfo

pytestmark = [pytest.mark.root, pytest.mark.netns]

LOCAL = NodeInfo("r1", "10.254.0.1", "10.42.7.0/24")


@pytest.fixture
def frr_node():
    if shutil.which("vtysh") is None:
        pytest.fail("FRR is not installed (contrib/install-deps.sh installs the frr package)")
    paths = LabPaths(f"fv{os.getpid() % 100000}{secrets.token_hex(2)}")
    ns = paths.node_netns("r1")
    try:
        netns.create(ns)
        with netns.entered(ns):
            from pyroute2 import IPRoute

            with IPRoute() as ipr:
                # a peer-less link so that the router has its address (peers need not exist)
                ipr.link("add", ifname="eth0", kind="veth", peer={"ifname": "eth1"})
                idx = ipr.link_lookup(ifname="eth0")[0]
                ipr.addr("add", index=idx, address=LOCAL.ip, prefixlen=24)
                ipr.link("set", index=idx, state="up")
        frr.start(paths, "r1", ns, {})
        yield paths
    finally:
        procs.terminate(procs.find_lab_processes([ns], ()), grace=5)
        netns.remove(ns)
        frr.cleanup(paths)
        shutil.rmtree(paths.run_dir, ignore_errors=True)


def backend(paths: LabPaths, **settings) -> FrrBgpRouting:
    cfg = NovaNetConfig(routingMode="native", routing={"type": "frr-bgp", "settings": {
        "pathspace": frr.pathspace(paths, "r1"), **settings}})
    b = FrrBgpRouting(BackendContext(config=cfg, component="agent", node=LOCAL))
    # reconcile() talks to FRR only; start() would also touch this (host) netns's kernel routes.
    b.local = LOCAL
    b._nodes_known = True
    return b


def running(b: FrrBgpRouting):
    return frrconf.parse_running_config(b.vtysh.running_config())[0]


def test_apply_then_nothing_to_do_then_rollback(frr_node, monkeypatch):
    remotes = [NodeInfo("r2", "10.254.0.2", "10.42.8.0/24"), NodeInfo("r3", "10.254.0.3", "10.42.9.0/24")]
    b = backend(frr_node, bfd={"enabled": True})
    b.remotes = remotes
    rep = b.reconcile("test")
    assert rep["ok"] and rep["commands"], rep
    st = running(b)
    assert st.bgp.asn == 64512 + 1 and set(st.bgp.neighbors) == {"10.254.0.2", "10.254.0.3"}
    assert st.bgp.networks == {"10.42.7.0/24"} and "novanet" in st.bfd_profiles

    # A second agent (a restart) finds FRR already right: no command at all.
    again = backend(frr_node, bfd={"enabled": True})
    again.remotes = remotes
    assert again.reconcile("restart") == {"ok": True, "commands": []}

    # FRR rejects a peer that is the router itself; the new node before it in the same batch
    # must be rolled back too, leaving exactly the previous config.
    before = running(b)
    # A backoff the "tick" below cannot outlast, however slow the vtysh calls before it are.
    monkeypatch.setattr(backend_module, "FIRST_RETRY_BACKOFF", 600.0)
    bad = backend(frr_node, bfd={"enabled": True}, peers=[{"address": LOCAL.ip, "asn": 65000}])
    bad.remotes = remotes + [NodeInfo("r4", "10.254.0.4", "10.42.10.0/24")]
    rep = bad.reconcile("bad peer")
    assert rep["ok"] is False and rep["rolledBack"] is True, rep
    assert f"neighbor {LOCAL.ip} remote-as 65000" in rep["error"]
    after = running(b)
    assert after == before
    st = bad.status()
    assert st["failures"] == 1 and st["rollbacks"] == 1 and st["lastApply"]["ok"] is False
    assert "no neighbor 10.254.0.4" in st["lastApply"]["rollbackCommands"]  # the node added before the failure
    # the failed change is retried with backoff, not on every tick
    assert bad.reconcile("tick")["ok"] is False and bad.status()["failures"] == 1


def test_withdraw_and_password_redacted(frr_node):
    b = backend(frr_node, peers=[{"address": "10.254.0.9", "asn": 65000, "password": "s3cret"}])
    assert b.reconcile("test")["ok"]
    assert running(b).bgp.neighbors["10.254.0.9"].password == "s3cret"
    assert all("s3cret" not in c for c in b.status()["lastApply"]["commands"])
    rep = b.set_advertise(False)
    assert rep["ok"] and running(b).bgp.networks == set()
    assert b.set_advertise(True)["ok"] and running(b).bgp.networks == {"10.42.7.0/24"}


def test_frr_down_is_reported_not_raised(frr_node):
    b = backend(frr_node)
    b.vtysh.pathspace = "no-such-frr"
    rep = b.reconcile("test")
    assert rep["ok"] is False and b.status()["connected"] is False and b.status()["lastError"]


def test_nothing_in_frrs_directory_is_world_writable_after_a_bfdd_crash(frr_node):
    # bfdd binds bfdd.sock with umask 0 (mode 0777): the lab tightens it, and again when a
    # killed bfdd is started anew (the native chaos soak found the 0777 socket).
    from tests.support.chaos import world_writable

    d = frr.frr_dir(frr_node, "r1")
    assert (d / "bfdd.sock").exists()
    assert world_writable([d]) == []
    frr.restart_daemon(frr_node, "r1", frr_node.node_netns("r1"), "bfdd", hard=True)
    assert world_writable([d]) == []
    assert stat.S_IMODE(os.stat(d / "bfdd.sock").st_mode) == 0o660


def test_routes_are_held_across_a_bgpd_restart_until_relearned(frr_node):
    # The native soak's one loss: a SIGKILLed bgpd started anew makes zebra sweep its stale routes
    # as soon as a session with a peer sending the Restart State bit is up, before that peer's
    # routes are in again. The backend holds them in their own table from the moment it finds a
    # bgpd without config until main has them again (or restart-time has passed).
    from pyroute2 import IPRoute

    from novanet_core.protocols import RTPROT_BGP

    ns = frr_node.node_netns("r1")
    prefix = {"dst": "10.42.8.0", "dst_len": 24}

    def table(ipr: IPRoute, t: int) -> set[str]:
        return {f"{r.get_attr('RTA_DST')}/{r.get('dst_len')}" for r in ipr.get_routes(family=2, table=t)}

    b = backend(frr_node, bfd={"enabled": True}, gracefulRestart={"restartTime": 120})
    b.remotes = [NodeInfo("r2", "10.254.0.2", "10.42.8.0/24")]
    with netns.entered(ns), IPRoute() as ipr:
        # what the old bgpd had zebra install; the fresh FRR of the fixture has no config at all
        ipr.route("add", gateway="10.254.0.2", oif=ipr.link_lookup(ifname="eth0")[0], proto=RTPROT_BGP, **prefix)
        assert b.reconcile("bgpd restarted")["ok"]
        assert b.status()["heldRoutes"] == ["10.42.8.0/24"]
        assert table(ipr, backend_module.HOLD_TABLE) == {"10.42.8.0/24"}
        assert FrrBgpRouting._hold_rule(ipr)
        # zebra's sweep: the prefix is still routed, through the hold
        ipr.route("del", proto=RTPROT_BGP, **prefix)
        assert "10.42.8.0/24" not in table(ipr, 254)
        got = json.loads(subprocess.run(["ip", "-j", "route", "get", "10.42.8.9"], capture_output=True, text=True,
                                        check=True).stdout)[0]
        assert got["gateway"] == "10.254.0.2" and got.get("table") == str(backend_module.HOLD_TABLE), got
        # relearned in main, but the neighbor is not established (no such peer here): held
        ipr.route("add", gateway="10.254.0.2", oif=ipr.link_lookup(ifname="eth0")[0], proto=RTPROT_BGP, **prefix)
        for _ in range(3):
            b._release_when_relearned()
        assert b.held == ["10.42.8.0/24"]
        # restart-time over: released, table and rule gone
        b._hold_until = 0.0
        b._release_when_relearned()
        assert b.held == [] and table(ipr, backend_module.HOLD_TABLE) == set() and not FrrBgpRouting._hold_rule(ipr)

        # Relearned with every neighbor up (here: none wanted any more): released after
        # HOLD_RELEASE_TICKS checks in a row, not at the first.
        b._hold_routes()
        b.remotes = []
        b._release_when_relearned()
        assert b.held == ["10.42.8.0/24"]
        b._release_when_relearned()
        assert b.held == [] and table(ipr, backend_module.HOLD_TABLE) == set()

        # An agent restarted during a hold adopts it.
        b._hold_routes()
        again = backend(frr_node)
        again._adopt_holds()
        assert again.held == ["10.42.8.0/24"]
        again._release_holds("test")
        assert table(ipr, backend_module.HOLD_TABLE) == set() and not FrrBgpRouting._hold_rule(ipr)


def test_ipv6_routes_are_held_and_released_like_ipv4_ones(frr_node):
    # A dual-stack node's routes to the other nodes' IPv6 PodCIDRs go through the same hold.
    from pyroute2 import IPRoute

    from novanet_core.protocols import RTPROT_BGP, RTPROT_NOVANET_ROUTING

    ns = frr_node.node_netns("r1")
    b = backend(frr_node, gracefulRestart={"restartTime": 120})
    b.remotes = [NodeInfo("r2", "10.254.0.2", "10.42.8.0/24")]
    with netns.entered(ns), IPRoute() as ipr:
        eth0 = ipr.link_lookup(ifname="eth0")[0]
        ipr.addr("add", index=eth0, address="fd00:fe::1", prefixlen=64, flags=0x02)  # IFA_F_NODAD
        ipr.route("add", family=10, dst="fd00:42:0:8::", dst_len=64, gateway="fd00:fe::2", oif=eth0, proto=RTPROT_BGP)
        assert b.reconcile("bgpd restarted")["ok"]
        assert b.status()["heldRoutes"] == ["fd00:42:0:8::/64"]
        held = [r for r in ipr.get_routes(family=10, table=backend_module.HOLD_TABLE) if r.get("proto") == RTPROT_NOVANET_ROUTING]
        assert [(r.get_attr("RTA_DST"), r.get_attr("RTA_GATEWAY")) for r in held] == [("fd00:42:0:8::", "fd00:fe::2")]
        assert FrrBgpRouting._hold_rule(ipr, 10) and not FrrBgpRouting._hold_rule(ipr, 2)
        again = backend(frr_node)
        again._adopt_holds()
        assert again.held == ["fd00:42:0:8::/64"]
        again._release_holds("test")
        assert not [r for r in ipr.get_routes(family=10, table=backend_module.HOLD_TABLE) if r.get("proto") == RTPROT_NOVANET_ROUTING]
        assert not FrrBgpRouting._hold_rule(ipr, 10)
