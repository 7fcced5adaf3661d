"""The emulated kube-proxy's rules: kube-proxy's names and shapes, and the kernel accepting them."""

from __future__ import annotations

import ipaddress
import re
import secrets
import subprocess

import pytest
from novanet_lab import kubeproxy
from novanet_lab.kubeproxy import iptables, nftables
from novanet_lab.kubeproxy.model import categorize, service_ports

from tests.unit.test_service_resolve import state


def service(name, ns="ns1", **spec):
    return {"kind": "Service", "metadata": {"name": name, "namespace": ns}, "spec": spec}


def slice_(name, svc, endpoints, ports, ns="ns1", address_type="IPv4"):
    return {"kind": "EndpointSlice", "metadata": {"name": name, "namespace": ns,
                                                  "labels": {"kubernetes.io/service-name": svc}},
            "addressType": address_type, "ports": ports, "endpoints": endpoints}


def ep(ip, node="node-1", **cond):
    return {"addresses": [ip], "nodeName": node, "conditions": cond}


BASIC = state(service("svc1", clusterIP="10.20.30.41", ports=[{"name": "p80", "port": 80}]),
              slice_("svc1-1", "svc1", [ep("10.180.0.1")], [{"name": "p80", "port": 80}]))


def test_names_are_kube_proxys():
    # The values kube-proxy's own tests expect for ns1/svc1:p80 and endpoint 10.180.0.1:80.
    sp = service_ports(BASIC, "node-1")[0]
    assert iptables.svc_chain(sp) == "KUBE-SVC-XPGD46QRK7WJZT7O"
    assert iptables.sep_chain(sp, sp.endpoints[0]) == "KUBE-SEP-SXIVWICOYRO3J4NJ"
    assert nftables.service_chain(sp) == "service-ULMVA6XW-ns1/svc1/tcp/p80"
    assert iptables.probability(3) == "0.3333333333" and iptables.probability(2) == "0.5000000000"


def test_iptables_basic_cluster_ip_matches_kube_proxy_line_for_line():
    text = iptables.render(service_ports(BASIC, "node-1"), "10.0.0.0/24")
    nat = text.split("*nat\n", 1)[1].split("COMMIT\n")[0].splitlines()
    # kube-proxy's expected output for this case (proxier_test.go), plus --random-fully, which
    # kube-proxy adds when iptables has it (this one does).
    assert nat == [
        ":KUBE-SERVICES - [0:0]", ":KUBE-NODEPORTS - [0:0]", ":KUBE-POSTROUTING - [0:0]", ":KUBE-MARK-MASQ - [0:0]",
        ":KUBE-SVC-XPGD46QRK7WJZT7O - [0:0]", ":KUBE-SEP-SXIVWICOYRO3J4NJ - [0:0]",
        "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
        "-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000",
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully',
        "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000",
        '-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 10.20.30.41 --dport 80 '
        "-j KUBE-SVC-XPGD46QRK7WJZT7O",
        '-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 10.20.30.41 '
        "--dport 80 ! -s 10.0.0.0/24 -j KUBE-MARK-MASQ",
        '-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.180.0.1:80" -j KUBE-SEP-SXIVWICOYRO3J4NJ',
        "-A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -s 10.180.0.1 -j KUBE-MARK-MASQ",
        "-A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT "
        "--to-destination 10.180.0.1:80",
        '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this '
        'chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS',
    ]


MIXED_OBJS = [
    service("web", clusterIP="10.96.0.20", sessionAffinity="ClientIP", ports=[{"name": "http", "port": 80}]),
    slice_("web-1", "web", [ep("10.42.0.5"), ep("10.42.1.5", "node-2"),
                            ep("10.42.1.6", "node-2", ready=False, serving=True, terminating=True)],
           [{"name": "http", "port": 8080}]),
    service("np", type="NodePort", externalTrafficPolicy="Local", clusterIP="10.96.0.21",
            ports=[{"port": 81, "nodePort": 30081}]),
    slice_("np-1", "np", [ep("10.42.0.7"), ep("10.42.1.7", "node-2")], [{"port": 81}]),
    service("npc", type="NodePort", clusterIP="10.96.0.24", ports=[{"port": 83, "nodePort": 30083}]),
    slice_("npc-1", "npc", [ep("10.42.1.9", "node-2")], [{"port": 83}]),
    service("empty", type="NodePort", clusterIP="10.96.0.22", ports=[{"port": 53, "protocol": "UDP", "nodePort": 30053}]),
    service("itl", internalTrafficPolicy="Local", clusterIP="10.96.0.23", ports=[{"port": 82}]),
    slice_("itl-1", "itl", [ep("10.42.1.8", "node-2")], [{"port": 82}]),
    service("term", clusterIP="10.96.0.25", ports=[{"port": 84}]),
    slice_("term-1", "term", [ep("10.42.0.10", ready=False, serving=True, terminating=True),
                              ep("10.42.0.11", ready=False)], [{"port": 84}]),
    service("headless", clusterIP="None", ports=[{"port": 85}]),
]
MIXED = state(*MIXED_OBJS)


def _chains(lines: list[str], pattern: str) -> set[str]:
    return {m.group(1) for line in lines for m in [re.search(pattern, line)] if m}


def test_iptables_rules_jump_only_to_chains_they_create_and_fill():
    # The consistency kube-proxy's tests check on every output (checkIPTablesRuleJumps).
    text = iptables.render(service_ports(MIXED, "node-1"), "10.42.0.0/16")
    builtin = {"ACCEPT", "REJECT", "DROP", "MARK", "RETURN", "DNAT", "SNAT", "MASQUERADE"}
    top = {"KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-FORWARD",
           "KUBE-MARK-MASQ", "KUBE-PROXY-FIREWALL", "KUBE-FIREWALL"}
    for table in ("*filter\n", "*nat\n"):
        lines = text.split(table, 1)[1].split("COMMIT\n")[0].splitlines()
        created = _chains(lines, r"^:(\S+)")
        filled = _chains(lines, r"^-A (\S+)")
        jumped = _chains(lines, r"-j (\S+)") - builtin
        assert jumped <= created and filled <= created
        assert jumped - filled <= {"KUBE-NODEPORTS"}
        assert created - jumped <= top


def test_iptables_traffic_policies_and_endpoint_conditions():
    text = iptables.render(service_ports(MIXED, "node-1"), "10.42.0.0/16")
    by_name = {p.name: p for p in service_ports(MIXED, "node-1")}
    web, np, npc, itl, term = (by_name[f"ns1/{n}"] for n in ("web:http", "np", "npc", "itl", "term"))
    # Terminating endpoints take no new connections while a ready one is left...
    assert [str(e) for e in categorize(web).cluster] == ["10.42.0.5:8080", "10.42.1.5:8080"]
    assert "--to-destination 10.42.1.6:8080" not in text
    # ...and are used when none is (kube-proxy's fallback); not-ready ones never.
    assert [str(e) for e in categorize(term).cluster] == ["10.42.0.10:84"]
    # ClientIP affinity: -m recent per endpoint, checked before the random pick.
    svc = iptables.svc_chain(web)
    assert f"-A {svc} -m comment --comment \"ns1/web:http -> 10.42.0.5:8080\" -m recent --name " \
           f"{iptables.sep_chain(web, web.endpoints[0])} --rcheck --seconds 10800 --reap" in text
    # externalTrafficPolicy Local: NodePort traffic to local endpoints only, source kept (no MARK-MASQ).
    ext, svl = iptables.ext_chain(np), iptables.svl_chain(np)
    assert f"-A {ext} -j {svl}" in text and f"-A KUBE-NODEPORTS -m comment --comment ns1/np -m tcp -p tcp " \
                                           f"--dport 30081 -j {ext}" in text
    assert [line for line in text.splitlines() if line.startswith(f"-A {svl}")] == [
        f"-A {svl} -m comment --comment \"ns1/np -> 10.42.0.7:81\" -j {iptables.sep_chain(np, np.endpoints[0])}"]
    # externalTrafficPolicy Cluster: masqueraded, then every endpoint.
    assert f"-A {iptables.ext_chain(npc)} -m comment --comment \"masquerade traffic for ns1/npc external " \
           "destinations\" -j KUBE-MARK-MASQ" in text
    # No endpoints at all: REJECT in the filter table; internalTrafficPolicy Local and none here: DROP.
    assert '-A KUBE-SERVICES -m comment --comment "ns1/empty has no endpoints" -m udp -p udp -d 10.96.0.22 --dport 53 ' \
           "-j REJECT" in text
    assert '-A KUBE-EXTERNAL-SERVICES -m comment --comment "ns1/empty has no endpoints" -m addrtype --dst-type ' \
           "LOCAL -m udp -p udp --dport 30053 -j REJECT" in text
    assert '-A KUBE-SERVICES -m comment --comment "ns1/itl has no local endpoints" -m tcp -p tcp -d 10.96.0.23 ' \
           "--dport 82 -j DROP" in text
    assert not any("10.96.0.23" in line for line in text.split("*nat\n")[1].splitlines())
    assert iptables.svl_chain(itl) not in text
    assert "headless" not in text
    # On node-2 the itl Service has its local endpoint.
    assert iptables.svl_chain(itl) in iptables.render(service_ports(MIXED, "node-2"), "10.42.0.0/16")


def test_iptables_probabilities_split_evenly():
    many = state(service("m", clusterIP="10.96.0.30", ports=[{"port": 80}]),
                 slice_("m-1", "m", [ep(f"10.42.0.{i}") for i in range(2, 6)], [{"port": 80}]))
    text = iptables.render(service_ports(many, "node-1"), "10.42.0.0/16")
    probs = re.findall(r"--probability (\S+)", text)
    assert probs == ["0.2500000000", "0.3333333333", "0.5000000000"]  # and the 4th rule is unconditional


def test_nftables_shapes():
    text = nftables.render(service_ports(MIXED, "node-1"), "10.42.0.0/16", "10.96.0.0/12")
    web = next(p for p in service_ports(MIXED, "node-1") if p.name == "ns1/web:http")
    chain = nftables.service_chain(web)
    eps = [nftables.endpoint_chain(web, e) for e in categorize(web).cluster]
    assert f"add element ip kube-proxy service-ips {{ 10.96.0.20 . tcp . 80 : goto {chain} }}" in text
    assert f"add rule ip kube-proxy {chain} numgen random mod 2 vmap {{ 0 : goto {eps[0]}, 1 : goto {eps[1]} }}" in text
    assert f"add rule ip kube-proxy {eps[0]} meta l4proto tcp dnat to 10.42.0.5:8080" in text
    assert "add element ip kube-proxy no-endpoint-services { 10.96.0.22 . udp . 53 comment \"ns1/empty\" : " \
           "goto reject-chain }" in text
    assert "add element ip kube-proxy no-endpoint-nodeports { udp . 30053 comment \"ns1/empty\" : goto reject-chain }" in text
    assert "add element ip kube-proxy no-endpoint-services { 10.96.0.23 . tcp . 82 comment \"ns1/itl\" : drop }" in text
    assert "flags dynamic,timeout ; timeout 10800s" in text
    assert "add rule ip kube-proxy cluster-ips-check ip daddr { 10.96.0.0/12 } drop" in text


def _v6(ip: str) -> str:
    """10.42.a.b -> fd00:42::a:b (and 10.96.0.x -> fd00:96::x): the IPv6 twin of a test address."""
    o = ip.split(".")
    return str(ipaddress.ip_address(f"fd00:{o[1]}::{o[2]}:{o[3]}" if o[1] == "42" else f"fd00:{o[1]}::{o[3]}"))


def dual_stack(*objs):
    """The objects of ``objs`` as on a dual-stack cluster: every Service with a ClusterIP also has
    its IPv6 twin (RequireDualStack), every slice an IPv6 copy of the twins of its addresses."""
    out = []
    for o in objs:
        if o["kind"] == "Service" and o["spec"].get("clusterIP") not in (None, "None"):
            spec = {**o["spec"], "clusterIPs": [o["spec"]["clusterIP"], _v6(o["spec"]["clusterIP"])],
                    "ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv4", "IPv6"]}
            out.append({**o, "spec": spec})
        elif o["kind"] == "EndpointSlice":
            out.append(o)
            eps = [{**e, "addresses": [_v6(a) for a in e["addresses"]]} for e in o["endpoints"]]
            out.append({**o, "metadata": {**o["metadata"], "name": o["metadata"]["name"] + "-v6"},
                        "addressType": "IPv6", "endpoints": eps})
        else:
            out.append(o)
    return out


V4ONLY = [service("v4only", clusterIP="10.96.0.26", ports=[{"port": 86}]),
          slice_("v4only-1", "v4only", [ep("10.42.0.12")], [{"port": 86}])]
# MIXED on a dual-stack cluster, plus a single-stack IPv4 Service
DUAL = state(*dual_stack(*MIXED_OBJS), *V4ONLY)


def test_each_family_has_its_own_service_ports_from_its_own_slices():
    v4, v6 = service_ports(DUAL, "node-1", 4), service_ports(DUAL, "node-1", 6)
    names = ["ns1/empty", "ns1/itl", "ns1/np", "ns1/npc", "ns1/term", "ns1/web:http"]
    assert [p.name for p in v4] == sorted([*names, "ns1/v4only"])
    assert [p.name for p in v6] == names  # v4only has no IPv6 ClusterIP, headless none at all
    web6 = next(p for p in v6 if p.name == "ns1/web:http")
    assert web6.cluster_ip == "fd00:96::20" and web6.family == 6
    assert [str(e) for e in categorize(web6).cluster] == ["[fd00:42::5]:8080", "[fd00:42::1:5]:8080"]
    assert all(e.ip.startswith("10.42.") for p in v4 for e in p.endpoints)
    np6 = next(p for p in v6 if p.name == "ns1/np")
    assert np6.node_port == 30081 and [str(e) for e in categorize(np6).local] == ["[fd00:42::7]:81"]
    # A dual-stack cluster's IPv4 rules are those of the same objects on an IPv4-only cluster.
    v4_alone = state(*MIXED_OBJS, *V4ONLY)
    assert iptables.render(v4, "10.42.0.0/16") == iptables.render(service_ports(v4_alone, "node-1"), "10.42.0.0/16")
    assert nftables.render(v4, "10.42.0.0/16", "10.96.0.0/12") == nftables.render(
        service_ports(v4_alone, "node-1"), "10.42.0.0/16", "10.96.0.0/12")


def test_iptables_ipv6_proxier_rules():
    ports = service_ports(DUAL, "node-1", 6)
    text = iptables.render(ports, "fd00:42::/48", 6)
    web = next(p for p in ports if p.name == "ns1/web:http")
    sep = iptables.sep_chain(web, web.endpoints[0])
    # The endpoint is "[ip]:port" in the SEP hash, the comments and the DNAT target, as kube-proxy writes it.
    assert sep == "KUBE-SEP-" + iptables._hash("ns1/web:httptcp[fd00:42::5]:8080")
    assert f"-A {sep} -m comment --comment ns1/web:http -s fd00:42::5 -j KUBE-MARK-MASQ" in text
    assert (f"-A {sep} -m comment --comment ns1/web:http -m recent --name {sep} --set -m tcp -p tcp -j DNAT "
            "--to-destination [fd00:42::5]:8080") in text
    assert (f'-A {iptables.svc_chain(web)} -m comment --comment "ns1/web:http cluster IP" -m tcp -p tcp '
            "-d fd00:96::20 --dport 80 ! -s fd00:42::/48 -j KUBE-MARK-MASQ") in text
    assert ('-A KUBE-SERVICES -m comment --comment "ns1/empty has no endpoints" -m udp -p udp -d fd00:96::22 '
            "--dport 53 -j REJECT") in text
    # No localhost NodePorts over IPv6: the tail rule leaves ::1 out, KUBE-FIREWALL stays empty.
    assert text.splitlines()[-2].endswith("-m addrtype --dst-type LOCAL ! -d ::1/128 -j KUBE-NODEPORTS")
    assert "KUBE-FIREWALL" not in text and "127.0.0.0/8" not in text
    assert not any(("10.42." in line or "10.96." in line) for line in text.splitlines())


def test_iptables_ipv6_rules_jump_only_to_chains_they_create_and_fill():
    text = iptables.render(service_ports(DUAL, "node-1", 6), "fd00:42::/48", 6)
    builtin = {"ACCEPT", "REJECT", "DROP", "MARK", "RETURN", "DNAT", "SNAT", "MASQUERADE"}
    for table in ("*filter\n", "*nat\n"):
        lines = text.split(table, 1)[1].split("COMMIT\n")[0].splitlines()
        created, filled = _chains(lines, r"^:(\S+)"), _chains(lines, r"^-A (\S+)")
        jumped = _chains(lines, r"-j (\S+)") - builtin
        assert jumped <= created and filled <= created and jumped - filled <= {"KUBE-NODEPORTS"}


def test_nftables_ipv6_proxier_table():
    ports = service_ports(DUAL, "node-1", 6)
    text = nftables.render(ports, "fd00:42::/48", "fd00:96::/108", 6)
    web = next(p for p in ports if p.name == "ns1/web:http")
    chain = nftables.endpoint_chain(web, web.endpoints[0])
    assert chain.endswith("-ns1/web/tcp/http__fd00.42..5/8080")  # colons as dots, as kube-proxy names it
    assert text.startswith("add table ip6 kube-proxy")
    assert f"add rule ip6 kube-proxy {chain} meta l4proto tcp dnat to [fd00:42::5]:8080" in text
    assert f"add rule ip6 kube-proxy {chain} ip6 saddr fd00:42::5 jump mark-for-masquerade" in text
    assert f"add rule ip6 kube-proxy {chain} update @{nftables.affinity_set(web, web.endpoints[0])} {{ ip6 saddr }}" in text
    assert "type ipv6_addr ; flags dynamic,timeout ; timeout 10800s" in text
    assert (f"add element ip6 kube-proxy service-ips {{ fd00:96::20 . tcp . 80 : goto {nftables.service_chain(web)} }}"
            in text)
    assert "add rule ip6 kube-proxy cluster-ips-check ip6 daddr { fd00:96::/108 } drop" in text
    assert "add rule ip6 kube-proxy services fib daddr type local ip6 daddr != ::1 meta l4proto . th dport" in text
    assert " ip " not in text and "ipv4_addr" not in text and "127.0.0.0/8" not in text


@pytest.fixture
def scratch_netns():
    name = f"kpr-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield f"/run/netns/{name}"
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.mark.root
@pytest.mark.netns
def test_the_kernel_takes_both_rule_sets(scratch_netns):
    ports = service_ports(MIXED, "node-1")
    ipt = subprocess.run(["nsenter", f"--net={scratch_netns}", "iptables-restore", "-w", "--noflush"],
                         input=iptables.render(ports, "10.42.0.0/16"), text=True, capture_output=True)
    assert ipt.returncode == 0, ipt.stderr
    saved = subprocess.run(["nsenter", f"--net={scratch_netns}", "iptables-save", "-t", "nat"], text=True,
                           capture_output=True, check=True).stdout
    assert "-m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-" in saved
    nft = subprocess.run(["nsenter", f"--net={scratch_netns}", "nft", "-f", "-"],
                         input=nftables.render(ports, "10.42.0.0/16", "10.96.0.0/12"), text=True, capture_output=True)
    assert nft.returncode == 0, nft.stderr
    listed = subprocess.run(["nsenter", f"--net={scratch_netns}", "nft", "list", "table", "ip", "kube-proxy"],
                            text=True, capture_output=True, check=True).stdout
    assert "numgen random mod 2 vmap" in listed and "type nat hook prerouting priority dstnat" in listed
    # A second full sync replaces the table in one transaction.
    again = subprocess.run(["nsenter", f"--net={scratch_netns}", "nft", "-f", "-"],
                           input=nftables.render([p for p in ports if p.name == "ns1/web:http"], "10.42.0.0/16",
                                                 "10.96.0.0/12"), text=True,
                           capture_output=True)
    assert again.returncode == 0, again.stderr
    listed = subprocess.run(["nsenter", f"--net={scratch_netns}", "nft", "list", "table", "ip", "kube-proxy"],
                            text=True, capture_output=True, check=True).stdout
    assert "10.96.0.21" not in listed and "10.96.0.20" in listed


@pytest.mark.root
@pytest.mark.netns
@pytest.mark.parametrize("mode", ["iptables", "nftables"])
def test_each_family_is_synced_and_pruned_on_its_own(scratch_netns, mode):
    # Both proxiers' full syncs into one netns, as the lab does: the kernel takes the IPv6 rules, a
    # family's next sync removes its stale service chains and leaves the other family's alone.
    name = scratch_netns.rsplit("/", 1)[1]
    v4, v6 = service_ports(DUAL, "node-1", 4), service_ports(DUAL, "node-1", 6)
    kubeproxy.install(name, mode, v4, "10.42.0.0/16", "10.96.0.0/12", 4)
    kubeproxy.install(name, mode, v6, "fd00:42::/48", "fd00:96::/108", 6)

    def listed(fam: int) -> str:
        if mode == "nftables":
            argv = ["nft", "list", "table", "ip6" if fam == 6 else "ip", "kube-proxy"]
        else:
            argv = ["ip6tables-save" if fam == 6 else "iptables-save"]
        return subprocess.run(["nsenter", f"--net={scratch_netns}", *argv], text=True, capture_output=True,
                              check=True).stdout

    np6 = next(p for p in v6 if p.name == "ns1/np")
    stale = iptables.ext_chain(np6) if mode == "iptables" else nftables.external_chain(np6)
    got6 = listed(6)
    assert "fd00:96::21" in got6 and stale in got6
    assert "[fd00:42::5]:8080" in got6  # the DNAT target, as either tool lists it
    kubeproxy.install(name, mode, [p for p in v6 if p.name != "ns1/np"], "fd00:42::/48", "fd00:96::/108", 6)
    got6, got4 = listed(6), listed(4)
    assert "fd00:96::21" not in got6 and stale not in got6 and "fd00:96::20" in got6
    assert "10.96.0.21" in got4 and stale in got4  # the IPv4 proxier's chain of the same name stays
