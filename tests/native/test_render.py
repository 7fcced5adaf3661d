"""frr-bgp config logic without FRR or root: settings errors, ASNs, desired state, parse and diff."""

from __future__ import annotations

import pytest
from novanet_frr_bgp import frrconf, plugin
from novanet_frr_bgp.model import BfdProfile, RoutingState, auto_asn, desired_state
from novanet_frr_bgp.settings import parse_settings

from novanet_core.config.models import NovaNetConfig
from novanet_core.types import NodeInfo

LOCAL = NodeInfo("node-1", "172.30.0.2", "10.42.0.0/24")
REMOTES = [NodeInfo("node-2", "172.30.0.3", "10.42.1.0/24"), NodeInfo("node-3", "172.30.1.4", "10.42.100.0/24")]

# What FRR 8.4 printed (show running-config, frr defaults datacenter) after the plugin configured
# a node with BFD and one password-protected peer; values at their defaults are not printed.
FRR_RUNNING = """Building configuration...

Current configuration:
!
frr version 8.4.4
frr defaults datacenter
hostname node-1
!
router bgp 64514
 bgp router-id 172.30.0.2
 bgp graceful-restart
 bgp graceful-restart preserve-fw-state
 neighbor 172.30.0.3 remote-as 64515
 neighbor 172.30.0.3 description novanet node node-2
 neighbor 172.30.0.3 bfd
 neighbor 172.30.0.3 bfd profile novanet
 neighbor 172.30.0.250 remote-as 65000
 neighbor 172.30.0.250 description tor
 neighbor 172.30.0.250 bfd
 neighbor 172.30.0.250 bfd profile novanet
 neighbor 172.30.0.250 password s3cret
 !
 address-family ipv4 unicast
  network 10.42.0.0/24
 exit-address-family
exit
!
bfd
 profile novanet
 exit
 !
exit
!
end
"""


def settings(**kw):
    s, errors = parse_settings(kw)
    assert not errors, errors
    return s


def test_auto_asn_is_the_originals_formula():
    assert auto_asn("172.30.0.2") == 64512 + 2
    assert auto_asn("10.0.3.7") == 64512 + 3 * 256 + 7
    assert auto_asn("10.0.3.7", base=4200000000) == 4200000000 + 775


@pytest.mark.parametrize("raw, message", [
    ({"asn": 0}, "routing.settings.asn: must be 'auto' or 1..4294967295"),
    ({"bfd": {"detectMultiplier": 1}}, "routing.settings.bfd.detectMultiplier: Input should be greater than or equal to 2"),
    ({"bfd": {"receiveInterval": 5}}, "routing.settings.bfd.receiveInterval: Input should be greater than or equal to 10"),
    ({"peers": [{"address": "tor", "asn": 65000}]}, "routing.settings.peers[0].address: 'tor' is not an IPv4 or IPv6 address"),
    ({"peers": [{"address": "10.0.0.1"}]}, "routing.settings.peers[0].asn: is required"),
    ({"peers": [{"address": "10.0.0.1", "asn": 1, "password": "a b"}]},
     "routing.settings.peers[0].password: must be printable ASCII without spaces"),
    ({"peers": [{"address": "10.0.0.1", "asn": 1, "description": "x\nrouter bgp 1"}]},
     "routing.settings.peers[0].description: must be printable ASCII without control characters"),
    ({"peers": [{"address": "10.0.0.1", "asn": 1}, {"address": "10.0.0.1", "asn": 2}]},
     "routing.settings.peers[1].address: 10.0.0.1 is listed twice"),
    ({"timers": {"keepalive": 10, "hold": 20}}, "routing.settings.timers.hold: must be at least 3 × timers.keepalive"),
    ({"bfdd": True}, "routing.settings.bfdd: unknown key"),
    ({"pathspace": "a.b"}, "routing.settings.pathspace: String should match pattern"),
])
def test_bad_settings_name_the_key(raw, message):
    s, errors = parse_settings(raw)
    assert s is None
    assert any(e.startswith(message) for e in errors), errors


def test_validate_config_hook_only_when_selected():
    bad = {"asn": "x"}
    native = NovaNetConfig(routingMode="native", routing={"type": "frr-bgp", "settings": bad})
    assert any(m.startswith("routing.settings.asn") for m in plugin.novanet_validate_config(native))
    assert plugin.novanet_validate_config(NovaNetConfig(routing={"type": "frr-bgp", "settings": bad})) is None
    other = NovaNetConfig(routingMode="native", routing={"type": "gobgp", "settings": bad})
    assert plugin.novanet_validate_config(other) is None


def test_desired_state_full_mesh_peers_bfd_gr():
    s = settings(bfd={"enabled": True, "receiveInterval": 200}, peers=[{"address": "172.30.0.250", "asn": 65000,
                                                                       "password": "s3cret", "bfd": False}])
    w = desired_state(LOCAL, REMOTES + [LOCAL], s)
    assert w.bgp.asn == 64514 and w.bgp.router_id == "172.30.0.2"
    assert w.bgp.networks == {"10.42.0.0/24"}
    assert set(w.bgp.neighbors) == {"172.30.0.3", "172.30.1.4", "172.30.0.250"}  # never itself
    assert w.bgp.neighbors["172.30.1.4"].remote_as == 64512 + 256 + 4
    assert w.bgp.neighbors["172.30.0.3"].bfd_profile == "novanet"
    tor = w.bgp.neighbors["172.30.0.250"]
    assert (tor.remote_as, tor.password, tor.bfd) == (65000, "s3cret", False)
    assert w.bfd_profiles == {"novanet": BfdProfile("novanet", 200, 300, 3)}
    assert w.bgp.graceful_restart and (w.bgp.restart_time, w.bgp.stalepath_time) == (120, 360)
    assert not desired_state(LOCAL, REMOTES, s, advertise=False).bgp.networks


def test_no_full_mesh_peers_only_and_fixed_asn():
    s = settings(fullMesh=False, asn=65010, peers=[{"address": "10.0.0.1", "asn": 65000}])
    w = desired_state(LOCAL, REMOTES, s)
    assert w.bgp.asn == 65010 and list(w.bgp.neighbors) == ["10.0.0.1"] and not w.bfd_profiles


def test_diff_from_empty_configures_everything_in_order():
    s = settings(bfd={"enabled": True}, timers={"keepalive": 1, "hold": 3})
    cmds = [c.strip() for c in frrconf.diff(RoutingState(), desired_state(LOCAL, REMOTES[:1], s), "datacenter")]
    assert cmds[:2] == ["bfd", "profile novanet"]  # profiles before the neighbors that use them
    i = cmds.index("router bgp 64514")
    assert cmds[i + 1:i + 4] == ["bgp router-id 172.30.0.2", "timers bgp 1 3", "bgp graceful-restart"]
    assert cmds.index("neighbor 172.30.0.3 remote-as 64515") < cmds.index("neighbor 172.30.0.3 bfd profile novanet")
    assert cmds[-4:] == ["address-family ipv4 unicast", "network 10.42.0.0/24", "exit-address-family", "exit"]
    # traditional defaults differ: the policy check and the timers must then be said explicitly
    trad = [c.strip() for c in frrconf.diff(RoutingState(), desired_state(LOCAL, [], settings()), "traditional")]
    assert "no bgp ebgp-requires-policy" in trad and "timers bgp 3 9" in trad


def test_parse_real_frr_output_then_no_diff():
    s = settings(bfd={"enabled": True}, peers=[{"address": "172.30.0.250", "asn": 65000, "password": "s3cret",
                                                "description": "tor"}])
    cur, profile = frrconf.parse_running_config(FRR_RUNNING)
    assert profile == "datacenter"
    assert cur.bgp.neighbors["172.30.0.250"].password == "s3cret"
    assert frrconf.diff(cur, desired_state(LOCAL, REMOTES[:1], s), profile, {"novanet"}) == []


def test_diff_changes_only_what_changed():
    cur, profile = frrconf.parse_running_config(FRR_RUNNING)
    s = settings(peers=[{"address": "172.30.0.250", "asn": 65001, "description": "tor"}])  # BFD off, new ASN, no pw
    cmds = [c.strip() for c in frrconf.diff(cur, desired_state(LOCAL, REMOTES, s), profile, {"novanet"})]
    assert cmds[0] == "router bgp 64514"
    body = cmds[1:cmds.index("exit")]
    assert "neighbor 172.30.0.250 remote-as 65001" in body and "no neighbor 172.30.0.250 password" in body
    assert "no neighbor 172.30.0.3 bfd" in body and "no neighbor 172.30.0.250 bfd" in body
    assert "neighbor 172.30.1.4 remote-as 64772" in body  # the new node
    assert not any("router-id" in c or "graceful" in c or "network" in c for c in body)
    assert cmds[-3:] == ["bfd", "no profile novanet", "exit"]  # profile removed after its users


def test_withdraw_and_removed_node():
    cur, profile = frrconf.parse_running_config(FRR_RUNNING)
    s = settings(bfd={"enabled": True}, peers=[{"address": "172.30.0.250", "asn": 65000, "password": "s3cret",
                                                "description": "tor"}])
    cmds = [c.strip() for c in frrconf.diff(cur, desired_state(LOCAL, [], s, advertise=False), profile)]
    assert cmds == ["router bgp 64514", "no neighbor 172.30.0.3", "address-family ipv4 unicast",
                    "no network 10.42.0.0/24", "exit-address-family", "exit"]


def test_asn_change_recreates_instance():
    cur, profile = frrconf.parse_running_config(FRR_RUNNING)
    cmds = frrconf.diff(cur, desired_state(LOCAL, [], settings(asn=65123)), profile)
    assert cmds[0] == "no router bgp 64514" and cmds[1] == "router bgp 65123"


def test_keep_neighbors_until_node_list_known():
    cur, _ = frrconf.parse_running_config(FRR_RUNNING)
    want = desired_state(LOCAL, [], settings())
    kept = frrconf.keep_neighbors(want, cur)
    assert set(kept.bgp.neighbors) == {"172.30.0.3", "172.30.0.250"} and "novanet" in kept.bfd_profiles
    assert not any(c.strip().startswith("no neighbor") for c in frrconf.diff(cur, kept, "datacenter"))


def test_redact_and_render():
    assert frrconf.redact([" neighbor 1.2.3.4 password s3cret"]) == [" neighbor 1.2.3.4 password <redacted>"]
    text = frrconf.render_config(desired_state(LOCAL, REMOTES[:1], settings()))
    assert text.startswith("frr defaults datacenter\nrouter bgp 64514\n bgp router-id 172.30.0.2\n")
    parsed, _ = frrconf.parse_running_config(text)
    assert frrconf.diff(parsed, desired_state(LOCAL, REMOTES[:1], settings()), "datacenter") == []


def test_bfd_is_added_to_a_neighbor_only_once_its_session_is_established():
    # bgpd registers BFD again (and bfdd makes a new session) when a session comes up after BFD
    # was configured without it; its peer tears that fresh session down (Cease/BFD Down, a hard
    # reset that drops our routes). So BFD is configured on a neighbor once it is established.
    from dataclasses import replace

    from novanet_frr_bgp.backend import FrrBgpRouting

    from novanet_core.backends import BackendContext

    cfg = NovaNetConfig(routingMode="native", routing={"type": "frr-bgp", "settings": {"bfd": {"enabled": True}}})
    b = FrrBgpRouting(BackendContext(config=cfg, component="agent", node=LOCAL))
    b.local, b.remotes = LOCAL, REMOTES
    states = {"172.30.0.3": "Established", "172.30.1.4": "Active"}

    class Vtysh:
        def show_json(self, command: str) -> dict:
            assert command == "show bgp summary json"
            return {"ipv4Unicast": {"peers": {a: {"state": s} for a, s in states.items()}}}

    b.vtysh = Vtysh()  # type: ignore[assignment]
    want = b._want()
    # a bgpd with no config (just started): nothing is established, no neighbor gets BFD yet
    fresh = b._bfd_once_established(want, RoutingState())
    assert not any(n.bfd for n in fresh.bgp.neighbors.values()) and "novanet" in fresh.bfd_profiles
    # configured without BFD, one session up: that neighbor gets it, the other waits
    cur = replace(fresh)
    got = b._bfd_once_established(want, cur).bgp.neighbors
    assert (got["172.30.0.3"].bfd, got["172.30.0.3"].bfd_profile) == (True, "novanet")
    assert not got["172.30.1.4"].bfd
    # a neighbor that has BFD keeps it when its session goes down (BFD is what reports that)
    with_bfd = RoutingState(bgp=replace(want.bgp), bfd_profiles=want.bfd_profiles)
    states["172.30.0.3"] = "Idle"
    assert b._bfd_once_established(want, with_bfd) == with_bfd


DUAL = NodeInfo("node-1", "172.30.0.2", "10.42.0.0/24", pod_cidrs=["10.42.0.0/24", "fd00:42::/64"],
                ips=["172.30.0.2", "fd00:fe::2"])
DUAL_REMOTES = [NodeInfo("node-2", "172.30.0.3", "10.42.1.0/24", pod_cidrs=["10.42.1.0/24", "fd00:42:0:1::/64"],
                         ips=["172.30.0.3", "fd00:fe::3"]),
                REMOTES[1]]  # an IPv4-only node: its session carries IPv4 only
V6 = NodeInfo("node-1", "fd00:fe::1:2", "fd00:42::/64")
V6_REMOTES = [NodeInfo("node-2", "fd00:fe::1:3", "fd00:42:0:1::/64")]


def test_dual_stack_node_advertises_both_over_its_ipv4_sessions():
    w = desired_state(DUAL, DUAL_REMOTES, settings(peers=[{"address": "172.30.0.250", "asn": 65000}]))
    assert w.bgp.networks == {"10.42.0.0/24", "fd00:42::/64"} and w.bgp.router_id == "172.30.0.2"
    assert {a: n.ipv6 for a, n in w.bgp.neighbors.items()} == {"172.30.0.3": True, "172.30.1.4": False,
                                                                "172.30.0.250": True}
    cmds = [c.strip() for c in frrconf.diff(RoutingState(), w, "datacenter")]
    af6 = cmds[cmds.index("address-family ipv6 unicast"):]
    assert af6[:4] == ["address-family ipv6 unicast", "network fd00:42::/64", "neighbor 172.30.0.3 activate",
                       "neighbor 172.30.0.250 activate"]
    assert "network fd00:42::/64" not in cmds[:cmds.index("address-family ipv6 unicast")]
    # what FRR prints for it parses back to the same state: nothing to do
    parsed, _ = frrconf.parse_running_config(frrconf.render_config(w))
    assert frrconf.diff(parsed, w, "datacenter") == []
    # a node that loses its IPv6 address stops advertising the IPv6 PodCIDR and deactivates
    v4only = NodeInfo("node-1", "172.30.0.2", "10.42.0.0/24", pod_cidrs=DUAL.pod_cidrs, ips=["172.30.0.2"])
    cmds = [c.strip() for c in frrconf.diff(parsed, desired_state(v4only, DUAL_REMOTES, settings(
        peers=[{"address": "172.30.0.250", "asn": 65000}])), "datacenter")]
    assert cmds == ["router bgp 64514", "address-family ipv6 unicast", "no network fd00:42::/64",
                    "no neighbor 172.30.0.3 activate", "no neighbor 172.30.0.250 activate", "exit-address-family",
                    "exit"]


def test_ipv6_only_nodes_peer_over_ipv6_with_bfd():
    w = desired_state(V6, V6_REMOTES, settings(bfd={"enabled": True}))
    # ASN and router-id from the IPv6 address's last bytes (a BGP identifier is 32 bits)
    assert w.bgp.asn == 64512 + 2 and w.bgp.router_id == "0.1.0.2"
    n = w.bgp.neighbors["fd00:fe::1:3"]
    assert (n.remote_as, n.ipv6, n.bfd_profile) == (64512 + 3, True, "novanet")
    assert w.bgp.networks == {"fd00:42::/64"}
    parsed, _ = frrconf.parse_running_config(frrconf.render_config(w))
    assert frrconf.diff(parsed, w, "datacenter") == []


def test_a_node_sharing_no_underlay_family_is_not_peered():
    w = desired_state(V6, [REMOTES[0]], settings())
    assert w.bgp.neighbors == {}


def test_ip_families_follow_the_underlay_addresses():
    from novanet_frr_bgp.backend import FrrBgpRouting

    from novanet_core.backends import BackendContext

    cfg = NovaNetConfig(routingMode="native", routing={"type": "frr-bgp", "settings": {}})
    for node, fams, cidrs in ((LOCAL, (4,), ["10.42.0.0/24"]), (DUAL, (4, 6), DUAL.pod_cidrs), (V6, (6,), V6.pod_cidrs),
                              (NodeInfo("n", "172.30.0.2", "10.42.0.0/24", pod_cidrs=DUAL.pod_cidrs), (4,),
                               ["10.42.0.0/24"])):
        b = FrrBgpRouting(BackendContext(config=cfg, component="agent", node=node))
        assert (b.ip_families, b.advertised_cidrs()) == (fams, cidrs)
