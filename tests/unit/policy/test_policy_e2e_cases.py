"""Every upstream netpol e2e case (tests/netpol_cases) through the compiler + evaluate, cell by cell.

Actions are applied to one PolicyEngine incrementally, as the agent would see them; after every
step the incremental result must also equal a from-scratch compile of the same state.
"""

from __future__ import annotations

import pytest

from novanet_core.policy import PolicyEngine
from novanet_core.state.model import ClusterState, Namespace, NetworkPolicy, Pod, parse_object, parse_ports
from tests import netpol_cases as nc

POD_IPS = {pod: f"10.9.{i // 3}.{10 + i % 3}" for i, pod in enumerate(nc.PODS)}
CASES = nc.load_cases(POD_IPS)


def test_all_48_cases_are_present_and_well_formed() -> None:
    assert [c.id for c in CASES] == list(range(1, 49))
    assert sum(c.context.endswith("using UDP") for c in CASES) == 3
    assert sum(c.context.endswith("using SCTP") for c in CASES) == 3
    for c in CASES:
        for s in c.steps:
            assert s.probes, f"case {c.id} has a step without probes"
            for p in s.probes:
                assert set(p.expected) == {(f, t) for f in nc.PODS for t in nc.PODS}
                assert nc.render_truth_table(p.expected) == p.table, f"case {c.id}: table does not round-trip"


def _initial_state(case: nc.NetpolCase) -> ClusterState:
    st = ClusterState()
    for ns in nc.NAMESPACES:
        st.namespaces[ns] = Namespace(ns, nc.namespace_labels(ns))
    # Every pod serves all (port, protocol) pairs upstream may probe, so named ports resolve the
    # same way whichever subset a case starts.
    ports = parse_ports("Pod", "model", "ports", nc.container_ports(["TCP", "UDP", "SCTP"], [80, 81]))
    for key in nc.PODS:
        ns, name = key.split("/")
        st.pods[key] = Pod(ns, name, nc.pod_labels(name), node="n1", ip=POD_IPS[key], ports=ports)
    return st


def _apply(eng: PolicyEngine, st: ClusterState, action: dict) -> None:
    (kind, arg), = action.items()
    if kind in ("create_policy", "update_policy"):
        np = parse_object(arg)
        assert isinstance(np, NetworkPolicy)
        st.policies[np.key] = np
        eng.upsert_policy(np)
    elif kind == "delete_all_policies":
        for key in list(st.policies):
            del st.policies[key]
            eng.delete_policy(key)
    elif kind == "add_namespace_labels":
        old = st.namespaces[arg["namespace"]]
        st.namespaces[old.name] = Namespace(old.name, {**old.labels, **arg["labels"]})
        eng.upsert_namespace(st.namespaces[old.name])
    elif kind == "add_pod_labels":
        old = st.pods[arg["pod"]]
        new = Pod(old.namespace, old.name, {**old.labels, **arg["labels"]}, old.node, old.ip, old.host_ip, old.ports)
        st.pods[new.key] = new
        eng.upsert_pod(new)
    else:
        raise AssertionError(f"unknown action {kind}")


@pytest.mark.parametrize("case", CASES, ids=[f"{c.id:02d}" for c in CASES])
def test_upstream_case(case: nc.NetpolCase) -> None:
    st = _initial_state(case)
    eng = PolicyEngine()
    eng.load(st)
    for si, step in enumerate(case.steps):
        for action in step.actions:
            _apply(eng, st, action)
        assert not eng.rejected, eng.rejected
        fresh = PolicyEngine()
        assert fresh.load(st) == eng.endpoints, f"case {case.id} step {si}: incremental != full compile"
        for probe in step.probes:
            got = {(f, t): eng.evaluate(f, t, probe.protocol, probe.port).allowed for f in nc.PODS for t in nc.PODS}
            if got != dict(probe.expected):
                pytest.fail(
                    f"case {case.id} ({case.name}) step {si} {probe.protocol}/{probe.port}\n"
                    f"expected:\n{probe.table}observed:\n{nc.render_truth_table(got)}"
                )
