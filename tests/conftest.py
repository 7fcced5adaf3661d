
import pytest


@pytest.fixture
def kernel_node():
    from tests.support.node import NodeUnderTest

    node = NodeUnderTest(datapath="kernel")
    try:
        node.start()
        yield node
    finally:
        node.close()


@pytest.fixture
def topo():
    """A throwaway node netns with pod netns and veths (tests/bpf/topo.py), removed even on failure."""
    from novanet_core.bpf import bpffs
    from tests.bpf.topo import Topology

    bpffs.ensure_mounted()
    t = Topology()
    try:
        t.create()
        yield t
    finally:
        t.destroy()
