"""Compiled NetworkPolicy in the real eBPF datapath (netns pods, tcx programs, pinned maps):
port ranges, protocols, ipBlock with except, both directions at the right hook, replies without
a reverse rule (also after a policy change), incremental diffs, restart adoption."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from novanet_lab.probe import Endpoint as ProbeEp
from novanet_lab.probe import probe_matrix

from novanet_core.policy import PolicyEngine
from novanet_core.policy.wire import decode_update, encode_endpoint, encode_update
from novanet_core.state.model import ClusterState, Namespace, NetworkPolicy, Pod, parse_object, parse_ports
from tests.bpf.topo import Topology
from tests.support.ping import PingWatch

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.bpf]

TCP_PORTS = [80, 5000, 5005, 5010, 5011]
UDP_PORTS = [5005]


def pol(text: str) -> NetworkPolicy:
    obj = parse_object(yaml.safe_load(text))
    assert isinstance(obj, NetworkPolicy)
    return obj


class Harness:
    """Topology pods + the backend + a PolicyEngine over the same pods, as the agent wires them."""

    def __init__(self, topo: Topology, dp: Any):
        self.topo, self.dp = topo, dp
        self.state = ClusterState()
        self.state.namespaces["t"] = Namespace("t", {})
        ports = parse_ports("Pod", "p", "ports", [{"containerPort": p, "protocol": "TCP"} for p in TCP_PORTS])
        for name, p in topo.pods.items():
            self.state.pods[f"t/{name}"] = Pod("t", name, {"pod": name}, node="n1", ip=p.ip, ports=ports)
        self.engine = PolicyEngine(node="n1")
        self.engine.load(self.state)
        for name, p in topo.pods.items():
            p.identity = self.engine.identity_of(f"t/{name}") or 0
            dp.upsert_endpoint(p.endpoint(topo.gateway))
        self.push(full=True)
        ready_dir = Path(tempfile.mkdtemp(prefix="novanet-podservers-"))
        ready = {n: ready_dir / n for n in topo.pods}
        self.servers = []
        try:
            for n, p in topo.pods.items():
                self.servers.append(p.popen(sys.executable, "-m", "novanet_lab.podserver", "--name", f"t/{n}",
                                            *[f"--tcp={x}" for x in TCP_PORTS], *[f"--udp={x}" for x in UDP_PORTS],
                                            "--ready-file", str(ready[n])))
            # Wait for every socket to be bound: a fixed sleep lost the race on a loaded machine and
            # a not-yet-listening server reads as a blocked probe.
            deadline = time.monotonic() + 30
            while not all(f.exists() for f in ready.values()):
                assert all(s.poll() is None for s in self.servers), "a pod server exited at start"
                assert time.monotonic() < deadline, "pod servers never became ready"
                time.sleep(0.02)
        except BaseException:
            self.close()  # the fixture never gets a Harness to close: no server may outlive the test
            raise
        finally:
            shutil.rmtree(ready_dir, ignore_errors=True)

    def close(self) -> None:
        for s in self.servers:
            s.terminate()
            s.wait(timeout=5)

    def push(self, delta: dict[str, Any] | None = None, full: bool = False) -> dict[str, Any]:
        keys = self.engine.endpoints if full else (delta or {})
        ups = [encode_endpoint(self.engine.endpoints[k], self.state.pods[k].ip or "") for k in keys
               if self.engine.endpoints.get(k) is not None]
        return self.apply_wire(encode_update(ups, [], full))

    def apply_wire(self, params: dict[str, Any]) -> dict[str, Any]:
        """What the dataplane host does with ``dp.policy.apply``: decode, then the backend."""
        u = decode_update(params)
        return self.dp.apply_policy(u.upserts, u.deletes, u.full)

    def apply(self, np: NetworkPolicy) -> dict[str, Any]:
        return self.push(self.engine.upsert_policy(np))

    def reach(self, src: str, dst: str, port: int, proto: str = "TCP") -> bool:
        s, d = self.topo.pods[src], self.topo.pods[dst]
        res = probe_matrix([ProbeEp(f"t/{src}", s.ip, s.ns)], [ProbeEp(f"t/{dst}", d.ip, d.ns)], [(port, proto)],
                           timeout=0.4)
        return res[0].allowed


@pytest.fixture
def h(topo: Topology) -> Iterator[Harness]:
    from novanet_ebpf_policy.backend import EbpfDatapath

    from novanet_core.backends import BackendContext
    from novanet_core.bpf.netns import netns
    from novanet_core.config.models import NovaNetConfig

    cfg = NovaNetConfig.model_validate(topo.config())
    with netns(topo.node):
        dp = EbpfDatapath(BackendContext(config=cfg, component="dataplane"))
        dp.start()
        harness = None
        try:
            dp.configure(topo.settings())
            harness = Harness(topo, dp)
            yield harness
        finally:
            if harness is not None:
                harness.close()
            dp.stop()


def test_port_ranges_protocols_cidr_except_and_the_enforcing_side(h: Harness) -> None:
    a, b, c = (h.topo.pods[n] for n in "abc")
    assert h.reach("a", "b", 5005) and h.reach("c", "b", 5011)  # nothing isolated yet
    h.apply(pol("""
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: b-from-a-range, namespace: t}
spec:
  podSelector: {matchLabels: {pod: b}}
  ingress: [{from: [{podSelector: {matchLabels: {pod: a}}}], ports: [{port: 5000, endPort: 5010}]}]
"""))
    assert [h.reach("a", "b", p) for p in (5000, 5005, 5010, 5011, 80)] == [True, True, True, False, False]
    assert not h.reach("a", "b", 5005, "UDP")  # the range is TCP only
    assert not h.reach("c", "b", 5005)  # another identity
    assert h.reach("b", "a", 80)  # b's egress is not isolated; the reply passes a's open ingress
    h.apply(pol(f"""
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: c-egress-cidr, namespace: t}}
spec:
  podSelector: {{matchLabels: {{pod: c}}}}
  policyTypes: [Egress]
  egress: [{{to: [{{ipBlock: {{cidr: 10.42.0.0/24, except: ["{b.ip}/32"]}}}}]}}]
"""))
    assert h.reach("c", "a", 80) and not h.reach("c", "b", 80)
    evs = [e for e in h.dp.flows.recent(drops_only=True, limit=1000) if e["src_ip"] == c.ip and e["dst_ip"] == b.ip]
    assert evs and evs[-1]["drop_reason_name"] == "POLICY_DENIED" and evs[-1]["policy_dir"] == "egress"
    assert evs[-1]["policies"] == ["t/c-egress-cidr"]
    assert "egress of t/c isolated by t/c-egress-cidr" in evs[-1]["policy_reason"]
    ing = [e for e in h.dp.flows.recent(drops_only=True, limit=1000) if e["src_ip"] == a.ip and e["dst_port"] == 5011]
    assert ing and ing[-1]["policy_dir"] == "ingress" and ing[-1]["policies"] == ["t/b-from-a-range"]
    entries = h.dp.list_policy()
    ranged = [r for r in entries["rules"] if r["policy"] == "t/b-from-a-range"]
    assert {r["ports"] for r in ranged} == {"5000-5007", "5008-5009", "5010"}  # 5000..5010 as port prefixes
    assert {x["cidr"] for x in entries["cidrs"]} == {"10.42.0.0/24", f"{b.ip}/32"}


def test_replies_need_no_reverse_rule_even_after_policy_changes(h: Harness) -> None:
    a, b = h.topo.pods["a"], h.topo.pods["b"]
    # a: ingress deny-all, egress only to b. Replies from b must still reach a.
    h.apply(pol("""
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-locked, namespace: t}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Ingress, Egress]
  egress: [{to: [{podSelector: {matchLabels: {pod: b}}}]}]
"""))
    assert h.reach("a", "b", 80) and not h.reach("b", "a", 80) and not h.reach("a", "c", 80)
    watch = PingWatch(a.popen, b.ip, interval=0.02)
    try:
        watch.wait_replies(10)
        for i in range(5):  # unrelated policy changes bump the revision: replies re-decide the original a->b
            r = h.apply(pol(f"""
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: unrelated-{i}, namespace: t}}
spec: {{podSelector: {{matchLabels: {{pod: c}}}}, ingress: [{{ports: [{{port: {1000 + i}}}]}}]}}
"""))
            assert r["revision"]
            time.sleep(0.3)
        last = watch.mark(ahead=10)
        watch.wait_replied(last)
        assert last > 50 and watch.lost(last) == [], watch.lost(last)
        # Now take a's egress to b away: the established flow is re-decided and dies.
        h.push(h.engine.upsert_policy(pol("""
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-locked, namespace: t}
spec: {podSelector: {matchLabels: {pod: a}}, policyTypes: [Ingress, Egress]}
""")))
        # Requests already on the wire when the push returned may still be answered, and the
        # reader thread may lag ping a little: allow half a second (25 requests) of those.
        cut = watch.mark() + 25
        end = watch.mark(ahead=75)
    finally:
        watch.stop()
    late = watch.replied_after(cut)
    assert late == [], f"requests {cut + 1}..{end} went out after the change; replies to {late}"


def test_incremental_updates_write_only_the_difference_and_restart_rewrites_nothing(h: Harness) -> None:
    from novanet_ebpf_policy.policymap import PolicyProgrammer

    st = h.apply(pol("""
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: to-b, namespace: t}
spec:
  podSelector: {matchLabels: {pod: b}}
  ingress: [{from: [{podSelector: {matchExpressions: [{key: team, operator: In, values: [blue]}]}}],
             ports: [{port: 80}, {port: 5000, endPort: 5010}]}]
"""))
    assert st["rules_added"] == 0 and st["ep_written"] == 1  # isolated, nobody is "blue" yet
    before = {bytes.fromhex(x) for x in _rule_keys(h)}
    # a pod label change: a becomes blue -> entries for a's NEW identity only
    old = h.state.pods["t/a"]
    new = Pod("t", "a", {"pod": "a", "team": "blue"}, old.node, old.ip, old.host_ip, old.ports)
    h.state.pods["t/a"] = new
    delta = h.engine.upsert_pod(new)
    h.topo.pods["a"].identity = h.engine.identity_of("t/a") or 0
    h.dp.upsert_endpoint(h.topo.pods["a"].endpoint(h.topo.gateway))
    st = h.push(delta)
    after = {bytes.fromhex(x) for x in _rule_keys(h)}
    assert st["rules_removed"] == 0 and st["rules_added"] == len(after - before) == 4  # 80 + 3 range prefixes
    assert h.reach("a", "b", 5005) and not h.reach("c", "b", 5005)

    # restart: a fresh programmer adopts the live maps; the agent's full resend writes nothing
    fresh = PolicyProgrammer(h.dp.maps)
    fresh.adopt_live()
    full = [encode_endpoint(ep, h.state.pods[k].ip or "") for k, ep in h.engine.endpoints.items()]
    st2 = fresh.apply(decode_update(encode_update(full, [], True)).upserts, [], full=True)
    assert not st2.changed(), st2


def _rule_keys(h: Harness) -> list[str]:
    return [k.hex() for k, _ in h.dp.maps.items("policy_rules")]


def test_bad_wire_input_names_the_field(h: Harness) -> None:
    from novanet_core.backends import ConfigError
    from novanet_core.policy.wire import WireError, decode_endpoint

    with pytest.raises(WireError, match=r"endpoints\[0\]\.ingress\.rules\[0\]\.ports\[0\]\.protocol"):
        h.apply_wire({"endpoints": [{"ip": h.topo.pods["a"].ip, "ingress": {"isolated": True, "rules": [
            {"peer": {"any": True}, "ports": [{"protocol": "ICMP", "first": 1, "last": 1}]}]}}]})
    with pytest.raises(WireError, match=r"endpoints\[0\]\.ip: 'fd00::x' is not an IP address"):
        h.apply_wire({"endpoints": [{"ip": "fd00::x"}]})
    with pytest.raises(ConfigError, match=r"endpoints\[0\]\.ip: 'fd00::x' is not an IP address"):
        h.dp.apply_policy([dataclasses.replace(decode_endpoint({"ip": "fd00::1"}), ip="fd00::x")])
    h.apply_wire({"endpoints": [{"ip": "fd00::1"}]})  # an IPv6 address: its own map (ep_policy_v6)
    assert [bytes(k) for k, _ in h.dp.maps.items("ep_policy_v6")] == [ipaddress.IPv6Address("fd00::1").packed]
    assert os.path.exists(Path(h.topo.bpf_root) / "ep_policy")


def test_endpoint_add_takes_the_policy_out_again_when_the_endpoint_fails(h: Harness) -> None:
    """``dp.endpoint.add`` through the real dataplane host: the policy is written first, and a
    failing endpoint (its host interface does not exist) leaves neither behind."""
    import dataclasses

    from novanet_core.api.protocol import ApiError
    from novanet_core.dataplane.service import DataplaneService

    svc = DataplaneService(h.dp)
    add = svc.router().get("dp.endpoint.add")
    assert add is not None
    a = h.topo.pods["a"]
    ghost = dataclasses.replace(a.endpoint(h.topo.gateway), ip="10.42.0.250", ips=["10.42.0.250"], host_ifname="nvnotthere01")
    policy = encode_endpoint(h.engine.endpoints["t/a"], ghost.ip)
    with pytest.raises(ApiError, match="DatapathError: host_ifname: interface 'nvnotthere01'") as ei:
        add[0]({"endpoint": ghost.to_dict(), "policy": policy})
    assert ei.value.code == "datapath"
    assert ghost.ip not in {e["ip"] for e in h.dp.list_endpoints()}
    assert ghost.ip not in {e["ip"] for e in h.dp.list_policy()["endpoints"]}
    # the same call for a real interface programs both
    res = add[0]({"endpoint": a.endpoint(h.topo.gateway).to_dict(), "policy": encode_endpoint(h.engine.endpoints["t/a"],
                                                                                                a.ip)})
    assert res["policy"] is True
    assert a.ip in {e["ip"] for e in h.dp.list_policy()["endpoints"]}


def test_policy_maps_full_fail_closed_counted_and_recover(h: Harness) -> None:
    """policy_cidrs at max_entries (filled from outside with prefixes no policy uses): a policy
    that needs a new prefix cannot be programmed, so its endpoint fails closed (everything
    dropped as POLICY_MAP_FULL, not left on its old, wider policy), other pods are untouched, the
    status shows it, and once there is room the retry programs it."""
    import ipaddress

    from novanet_ebpf_policy.layouts import MAPS
    from novanet_ebpf_policy.policymap import cidr_key

    from novanet_core.bpf import syscall

    assert h.reach("a", "b", 80) and h.reach("a", "c", 80)
    fd = h.dp.maps.fds["policy_cidrs"]
    cap = MAPS["policy_cidrs"].spec.max_entries
    base = int(ipaddress.IPv4Address("198.18.0.0"))  # benchmarking range: never a pod or policy here
    filler = [cidr_key(ipaddress.IPv4Network((base + i, 32))) for i in range(cap)]
    try:
        for k in filler:
            try:
                syscall.map_update(fd, k, (0xFFFFFF).to_bytes(4, "little"))
            except OSError:
                break  # full (it may already hold the harness's own prefixes)
        before = h.dp.drop_counters()["POLICY_MAP_FULL"]
        res = h.apply(pol("""
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: rel18-full, namespace: t}
spec:
  podSelector: {matchLabels: {pod: b}}
  ingress:
  - from: [{ipBlock: {cidr: 203.0.113.0/24}}, {podSelector: {}}]
"""))
        b = h.topo.pods["b"].ip
        assert res["blocked"] == [b], res
        assert not h.reach("a", "b", 80)  # the policy allows it, but it is not in the maps: closed
        assert not h.reach("b", "c", 80)  # both directions of the failed endpoint
        assert h.reach("a", "c", 80)  # other pods keep theirs
        assert h.dp.drop_counters()["POLICY_MAP_FULL"] > before
        pm = h.dp.status()["policy_maps"]
        assert pm["failedClosed"] == [b] and pm["fullEvents"] >= 1 and "ENOSPC" in pm["lastFull"]["reason"]
    finally:
        for k in filler:
            syscall.map_delete(fd, k)
    deadline = time.monotonic() + 30  # the retry runs every 2 s
    while h.dp.status()["policy_maps"]["failedClosed"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert h.dp.status()["policy_maps"]["failedClosed"] == []
    assert h.reach("a", "b", 80) and h.reach("b", "c", 80)
