from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from tests.bpf.topo import Topology


@pytest.fixture
def datapath(topo: Topology) -> Iterator[object]:
    """The ebpf backend started inside the node netns, all pods upserted (default allow)."""
    with started_datapath(topo) as dp:
        yield dp


@contextlib.contextmanager
def started_datapath(topo: Topology, **bpf: object) -> Iterator[object]:
    """The ebpf backend with ``bpf.*`` config overrides, all pods upserted; stopped on exit."""
    from novanet_ebpf_policy.backend import EbpfDatapath

    from novanet_core.backends import BackendContext
    from novanet_core.bpf.netns import netns
    from novanet_core.config.models import NovaNetConfig

    cfg = NovaNetConfig.model_validate(topo.config(**bpf))  # type: ignore[arg-type]
    with netns(topo.node):
        dp = EbpfDatapath(BackendContext(config=cfg, component="dataplane"))
        dp.start()
        try:
            dp.configure(topo.settings())
            for p in topo.pods.values():
                dp.upsert_endpoint(p.endpoint(topo.gateway))
            yield dp
        finally:
            dp.stop()
