"""Fuzzing the running daemons: a real agent and dataplane (ebpf datapath) in a node netns with
two pods and a NetworkPolicy in force, their three sockets fed hostile requests for a few seconds
each (bench/fuzz.py runs minutes). After every refused request the node's state must be what it
was, and after every round both daemons must still serve a good request and the pods still talk.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.fuzz import api_targets, harness
from tests.fuzz.daemons import (
    FuzzNode,
    agent_methods,
    cni_conf,
    cni_methods,
    dataplane_methods,
    run_cni_client,
    run_socket,
)

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.bpf]


@pytest.fixture(scope="module")
def fnode() -> Iterator[FuzzNode]:
    f = FuzzNode()
    try:
        f.start()
        yield f
    finally:
        f.close()


def test_fuzz_agent_control_socket(fnode: FuzzNode) -> None:
    harness.assert_clean(run_socket(fnode, "agent-socket", fnode.node.config["sockets"]["agent"],
                                    agent_methods(fnode), harness.budget(8)))


def test_fuzz_agent_cni_socket(fnode: FuzzNode) -> None:
    harness.assert_clean(run_socket(fnode, "cni-socket", fnode.node.config["sockets"]["cni"], cni_methods(fnode),
                                    harness.budget(8)))


def test_fuzz_dataplane_socket(fnode: FuzzNode) -> None:
    harness.assert_clean(run_socket(fnode, "dataplane-socket", fnode.node.config["sockets"]["dataplane"],
                                    dataplane_methods(fnode), harness.budget(8)))


def test_fuzz_cni_client_against_the_agent(fnode: FuzzNode, tmp_path) -> None:
    harness.assert_clean(run_cni_client(fnode, str(tmp_path), harness.budget(8)))


def test_fuzz_c_cni_binary_against_the_agent(fnode: FuzzNode, tmp_path) -> None:
    """The same target, the static C client exec'd for every case (as a runtime runs it)."""
    from tests.support.cni_clients import build_c_binary

    harness.assert_clean(run_cni_client(fnode, str(tmp_path), harness.budget(8), binary=str(build_c_binary())))


@pytest.mark.parametrize("attachments", ["all", {}, [{"ifname": "eth0"}], [["fuzzpod0"]], [{"containerID": 7}]])
def test_gc_with_a_malformed_attachment_list_changes_nothing(fnode: FuzzNode, attachments: Any) -> None:
    """Found while writing the cni-socket target (which cannot safely send GC): the agent's GC
    iterated whatever it was given, and {} iterates as an empty list, so it removed every pod.
    Now the agent checks the request as the client does."""
    before = fnode.state()
    conf = {**cni_conf(fnode.node), "cni.dev/valid-attachments": attachments}
    answers = api_targets.exchange(fnode.node.config["sockets"]["cni"], api_targets._line(
        {"v": 1, "id": 1, "method": "cni.gc", "params": {"command": "GC", "config": conf}}))
    assert answers[0]["error"]["code"] == "invalid_params", answers
    assert "valid-attachments" in answers[0]["error"]["message"]
    assert fnode.state() == before
