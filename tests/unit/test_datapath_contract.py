"""The datapath contract: protocol checks at create, sections and capabilities, the policy wire
form, the all-or-nothing ADD, and the kernel datapath refusing policy instead of accepting it."""

from __future__ import annotations

import types
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from novanet_core.api.protocol import ApiError
from novanet_core.backends import DATAPATH_SECTIONS, BackendContext, ConfigError, backend_problems
from novanet_core.builtin.kernel_datapath import KernelDatapath
from novanet_core.config.models import NovaNetConfig
from novanet_core.dataplane.service import DataplaneService
from novanet_core.hookspecs import hookimpl
from novanet_core.plugins.manager import PluginHost
from novanet_core.policy import (
    AnyPeer,
    CidrPeer,
    DirectionPolicy,
    EndpointPolicy,
    IdentityPeer,
    PortRange,
    Rule,
)
from novanet_core.policy.wire import WireError, decode_endpoint, decode_update, encode_endpoint, encode_update
from novanet_core.types import Endpoint, RemoteEndpoint

CFG = NovaNetConfig(podCIDR="10.42.0.0/24")


class MemoryDatapath:
    """A complete datapath that keeps its state in dicts: the host's logic under test, no kernel."""

    name = "memory"
    capabilities = frozenset({"policy"})

    def __init__(self, ctx: BackendContext | None = None) -> None:
        self.endpoints: dict[str, Endpoint] = {}
        self.policies: dict[str, EndpointPolicy] = {}
        self.remotes: dict[str, RemoteEndpoint] = {}
        self.log: list[str] = []

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def configure(self, settings: dict[str, Any]) -> None: ...

    def upsert_endpoint(self, endpoint: Endpoint) -> None:
        self.log.append(f"endpoint {endpoint.ip}")
        if endpoint.host_ifname == "broken":
            raise RuntimeError(f"{endpoint.host_ifname}: attach failed")
        self.endpoints[endpoint.ip] = endpoint

    def delete_endpoint(self, ip: str, host_ifname: str | None = None) -> None:
        self.endpoints.pop(ip, None)

    def upsert_remote(self, remote: RemoteEndpoint) -> None:
        self.remotes[remote.ip] = remote

    def delete_remote(self, ip: str) -> None:
        self.remotes.pop(ip, None)

    def list_endpoints(self) -> list[dict[str, Any]]:
        return [{"ip": ip, "identity": e.identity} for ip, e in self.endpoints.items()]

    def status(self) -> dict[str, Any]:
        return {"endpoints": len(self.endpoints)}

    def apply_policy(self, upserts: Sequence[EndpointPolicy], deletes: Sequence[str] = (),
                     full: bool = False) -> dict[str, Any]:
        if full:
            self.policies.clear()
        for ip in deletes:
            self.policies.pop(ip, None)
        for ep in upserts:
            self.log.append(f"policy {ep.ip}")
            self.policies[ep.ip or ""] = ep
        return {"ep_written": len(upserts)}

    def list_policy(self) -> dict[str, Any]:
        return {"endpoints": sorted(self.policies)}


def _endpoint(ip: str = "10.42.0.7", host_ifname: str = "nvabc") -> Endpoint:
    return Endpoint(container_id="c1", ifname="eth0", namespace="t", pod="a", netns="/proc/1/ns/net", ip=ip,
                    mac="02:fe:0a:2a:00:07", host_ifname=host_ifname, host_ifindex=7, host_mac="02:fd:0a:2a:00:07",
                    gateway="10.42.0.1", mtu=1500, identity=400)


POLICY = EndpointPolicy(
    pod="t/a", identity=400, ip="10.42.0.7", node=None,
    ingress=DirectionPolicy(True, (Rule(IdentityPeer(frozenset({401, 402})), (PortRange("TCP", 80, 80),), "t/p",
                                        "ingress[0]"),
                                   Rule(CidrPeer("10.0.0.0/8", ("10.1.0.0/16",)), None, "t/p", "ingress[1]")),
                            ("t/p",)),
    egress=DirectionPolicy(True, (Rule(AnyPeer(), (PortRange("UDP", 53, 53), PortRange("SCTP", 1, 65535)), "t/q",
                                       "egress[0]"),), ("t/q",)))


def _call(svc: DataplaneService, method: str, params: dict[str, Any]) -> Any:
    entry = svc.router().get(method)
    assert entry is not None, method
    return entry[0](params)


# ---------------------------------------------------------------------- protocol checks


def test_a_complete_datapath_and_the_builtin_ones_pass_the_check() -> None:
    assert backend_problems("datapath", MemoryDatapath()) == []
    assert backend_problems("datapath", KernelDatapath(BackendContext(config=CFG, component="dataplane"))) == []


def test_missing_members_and_sections_are_named() -> None:
    partial = types.SimpleNamespace(name="half", capabilities=frozenset({"policy", "teleport"}),
                                    start=lambda: None, status=lambda: {}, apply_policy=lambda *a: {})
    problems = backend_problems("datapath", partial)
    assert problems[0].startswith("DatapathBackend needs configure, delete_endpoint, delete_remote, list_endpoints")
    assert problems[1] == "section 'policy' (PolicyDatapath) needs list_policy"
    assert problems[2].startswith("capabilities: unknown section 'teleport' (known: flows, policy, prewarm, service")
    no_caps = MemoryDatapath()
    no_caps.capabilities = ["policy"]  # type: ignore[assignment]
    assert backend_problems("datapath", no_caps) == ["capabilities must be a set of section names, not ['policy']"]
    assert set(DATAPATH_SECTIONS) >= {"policy", "flows", "service"}


def test_plugin_host_create_refuses_a_backend_that_misses_its_protocol() -> None:
    class HalfIpam:
        def __init__(self, ctx: BackendContext) -> None: ...

        def allocate(self, request: Any) -> None: ...

    mod = types.ModuleType("half_ipam")
    mod.novanet_register_backends = hookimpl(  # type: ignore[attr-defined]
        lambda registry: registry.add("ipam", "half", HalfIpam))
    host = PluginHost(NovaNetConfig(podCIDR="10.42.0.0/24", ipam={"type": "half"}), "agent", extra_plugins=[mod],
                      load_entry_points=False)
    with pytest.raises(ConfigError) as e:
        host.create("ipam")
    assert str(e.value) == ("ipam.type: ipam backend 'half' of plugin 'half_ipam' (HalfIpam) does not implement its "
                            "protocol: IpamBackend needs gc, get, list, release, status")


# ---------------------------------------------------------------------- wire form


def test_wire_round_trip_keeps_every_field() -> None:
    d = encode_endpoint(POLICY, "10.42.0.7")
    assert decode_endpoint(d) == POLICY
    u = decode_update(encode_update([d], ["10.42.0.9", "10.42.0.9"], False))
    assert u.upserts == (POLICY,) and u.deletes == ("10.42.0.9",) and not u.full


@pytest.mark.parametrize("patch,path", [
    (lambda d: d.update(ip="10.42.0"), "endpoints[0].ip"),
    (lambda d: d.update(identity=-1), "endpoints[0].identity"),
    (lambda d: d["ingress"].update(isolated="yes"), "endpoints[0].ingress.isolated"),
    (lambda d: d["ingress"]["rules"][0]["ports"][0].update(protocol="ICMP"), "endpoints[0].ingress.rules[0].ports[0].protocol"),
    (lambda d: d["ingress"]["rules"][0]["ports"][0].update(last=70000), "endpoints[0].ingress.rules[0].ports[0]"),
    (lambda d: d["ingress"]["rules"][0]["peer"].update(identities=[0]), "endpoints[0].ingress.rules[0].peer.identities"),
    (lambda d: d["ingress"]["rules"][1]["peer"].update(cidr="10.0.0.0/33"), "endpoints[0].ingress.rules[1].peer"),
    (lambda d: d["ingress"]["rules"][1]["peer"].update(cidr="fd00::/16", **{"except": ["fd00:1::/32", "10.1.0.0/16"]}),
     "endpoints[0].ingress.rules[1].peer.except[1]"),  # a mixed-family block
    (lambda d: d["ingress"]["rules"][1]["peer"].update(cidr="fd00::/16", **{"except": ["fd01::/32"]}),
     "endpoints[0].ingress.rules[1].peer.except[0]"),  # outside its cidr
    (lambda d: d["egress"]["rules"][0].update(peer={}), "endpoints[0].egress.rules[0].peer"),
    (lambda d: d["egress"].update(selected_by=[1]), "endpoints[0].egress.selected_by"),
])
def test_bad_wire_input_names_the_field_path(patch: Any, path: str) -> None:
    d = encode_endpoint(POLICY, "10.42.0.7")
    patch(d)
    with pytest.raises(WireError) as e:
        decode_update({"endpoints": [d]})
    assert str(e.value).startswith(path + ":"), str(e.value)


# ---------------------------------------------------------------------- dataplane host


def test_endpoint_add_writes_policy_first_and_is_all_or_nothing() -> None:
    dp = MemoryDatapath()
    svc = DataplaneService(dp)
    res = _call(svc, "dp.endpoint.add", {"endpoint": _endpoint().to_dict(),
                                         "policy": encode_endpoint(POLICY, "10.42.0.7")})
    assert res == {"policy": True, "policyApplied": {"ep_written": 1}}
    assert dp.log == ["policy 10.42.0.7", "endpoint 10.42.0.7"]
    assert set(dp.endpoints) == set(dp.policies) == {"10.42.0.7"}

    broken = _endpoint("10.42.0.8", host_ifname="broken")
    with pytest.raises(ApiError, match="attach failed") as ei:
        _call(svc, "dp.endpoint.add", {"endpoint": broken.to_dict(), "policy": encode_endpoint(POLICY, "10.42.0.8")})
    assert ei.value.code == "datapath"  # the backend could not carry it out; "internal" is for bugs
    assert set(dp.endpoints) == set(dp.policies) == {"10.42.0.7"}  # both rolled back, the first untouched

    with pytest.raises(ApiError, match=r"^policy\.ip: '10\.42\.0\.7' is not the endpoint's ip '10\.42\.0\.9'"):
        _call(svc, "dp.endpoint.add", {"endpoint": _endpoint("10.42.0.9").to_dict(),
                                       "policy": encode_endpoint(POLICY, "10.42.0.7")})
    assert "10.42.0.9" not in dp.endpoints


def test_remote_batch_deletes_then_upserts_and_checks_every_entry_first() -> None:
    dp = MemoryDatapath()
    svc = DataplaneService(dp)
    rem = [{"ip": f"10.43.0.{i}", "identity": 300 + i, "node_ip": "172.20.0.3", "namespace": "ns", "pod": f"p{i}"}
           for i in range(1, 4)]
    assert _call(svc, "dp.remote.batch", {"upsert": rem}) == {"upserted": 3, "deleted": 0}
    assert sorted(dp.remotes) == ["10.43.0.1", "10.43.0.2", "10.43.0.3"]
    moved = {**rem[0], "node_ip": "172.20.0.4"}
    assert _call(svc, "dp.remote.batch", {"upsert": [moved], "delete": ["10.43.0.1", "10.43.0.2"]}) == {
        "upserted": 1, "deleted": 2}
    assert sorted(dp.remotes) == ["10.43.0.1", "10.43.0.3"] and dp.remotes["10.43.0.1"].node_ip == "172.20.0.4"
    for bad, where in (({"upsert": [rem[1], {**rem[2], "identity": "x"}]}, "upsert[1].identity:"),
                       ({"upsert": [{**rem[1], "color": 1}]}, "upsert[0].color:"),
                       ({"delete": ["10.43.0.3", 7]}, "delete:"), ({"upsert": {}}, "upsert:")):
        with pytest.raises(ApiError) as e:
            _call(svc, "dp.remote.batch", bad)
        assert e.value.code == "invalid_params" and e.value.message.startswith(where), e.value.message
    assert sorted(dp.remotes) == ["10.43.0.1", "10.43.0.3"]  # nothing of a refused batch applied


def test_a_datapath_without_the_policy_section_gets_the_endpoint_alone() -> None:
    dp = MemoryDatapath()
    dp.capabilities = frozenset()
    svc = DataplaneService(dp)
    res = _call(svc, "dp.endpoint.add", {"endpoint": _endpoint().to_dict(),
                                         "policy": encode_endpoint(POLICY, "10.42.0.7")})
    assert res == {"policy": False, "policyApplied": {}} and dp.policies == {}
    assert _call(svc, "dp.status", {})["capabilities"] == []


def test_policy_apply_decodes_for_the_backend_and_keeps_the_old_name() -> None:
    dp = MemoryDatapath()
    svc = DataplaneService(dp)
    wire = encode_update([encode_endpoint(POLICY, "10.42.0.7")], [], True)
    assert _call(svc, "dp.policy.apply", wire) == {"ep_written": 1}
    assert dp.policies == {"10.42.0.7": POLICY}
    assert _call(svc, "policy.apply", encode_update([], ["10.42.0.7"], False)) == {"ep_written": 0}
    assert _call(svc, "dp.policy.list", {}) == {"endpoints": []}
    with pytest.raises(ApiError) as e:
        _call(svc, "dp.policy.apply", {"endpoints": [{"ip": "x"}]})
    assert e.value.code == "invalid_params" and e.value.message.startswith("endpoints[0].ip:")
    with pytest.raises(ApiError) as e:
        _call(svc, "dp.flows", {})
    assert e.value.code == "unsupported" and "does not implement the flows section" in e.value.message


def test_kernel_datapath_refuses_policy_and_says_so() -> None:
    svc = DataplaneService(KernelDatapath(BackendContext(config=CFG, component="dataplane")))
    for method, params in (("dp.policy.apply", encode_update([encode_endpoint(POLICY, "10.42.0.7")], [], True)),
                           ("dp.policy.list", {})):
        with pytest.raises(ApiError) as e:
            _call(svc, method, params)
        assert e.value.code == "unsupported"
        assert e.value.message.startswith("datapath kernel does not enforce NetworkPolicy")
    st = _call(svc, "dp.status", {})
    assert st["capabilities"] == [] and st["policy"]["enforced"] is False


def test_flows_params_are_checked_before_the_backend() -> None:
    class Flows(MemoryDatapath):
        capabilities = frozenset({"policy", "flows"})

        def flow_events(self, identity: int = 0, drops_only: bool = False, follow: bool = False,
                        limit: int = 100) -> Iterator[dict[str, Any]]:
            return iter([{"identity": identity, "drops_only": drops_only, "limit": limit}])

    svc = DataplaneService(Flows())
    assert list(_call(svc, "dp.flows", {"identity": 5, "drops_only": True})) == [
        {"identity": 5, "drops_only": True, "limit": 100}]
    with pytest.raises(ApiError, match=r"^limit: -1 is not an integer"):
        _call(svc, "dp.flows", {"limit": -1})
