"""The CNI ``bandwidth`` capability as the agent reads it.

A runtime passes a pod's limits (Kubernetes: the ``kubernetes.io/ingress-bandwidth`` and
``kubernetes.io/egress-bandwidth`` annotations) as ``runtimeConfig.bandwidth`` to every plugin of
the chain that declares the capability. The chained reference ``bandwidth`` plugin does the shaping
(tbf qdiscs on the pod's host veth and an ifb); NovaNet declares the capability too only to learn
which directions of the pod are shaped, because the eBPF datapath must then leave those packets to
the kernel where the qdiscs are (``novanet_core.bpf.layouts.EndpointFlag``).
"""

from __future__ import annotations

from typing import Any

from novanet_core.cni.protocol import ERR_INVALID_CONFIG, CniError

RATE_KEYS = ("ingressRate", "ingressBurst", "egressRate", "egressBurst")


def limits(conf: dict[str, Any]) -> tuple[int, int]:
    """(ingress rate, egress rate) in bit/s from the config's ``runtimeConfig.bandwidth``; 0 = none."""
    rc = conf.get("runtimeConfig")
    if rc is None:
        return 0, 0
    if not isinstance(rc, dict):
        raise CniError(ERR_INVALID_CONFIG, "runtimeConfig: must be an object")
    bw = rc.get("bandwidth")
    if bw is None:
        return 0, 0
    if not isinstance(bw, dict):
        raise CniError(ERR_INVALID_CONFIG, "runtimeConfig.bandwidth: must be an object")
    for key in RATE_KEYS:
        v = bw.get(key, 0)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise CniError(ERR_INVALID_CONFIG, f"runtimeConfig.bandwidth.{key}: must be a non-negative integer "
                           f"(bits{'/s' if key.endswith('Rate') else ''}), got {v!r}")
    return bw.get("ingressRate", 0), bw.get("egressRate", 0)
