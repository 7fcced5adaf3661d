"""After every lab change: derived EndpointSlices written, then kube-proxy rules and the cluster DNS.

The state is read back from the manifest directory, i.e. exactly what the agents read, so the
emulated controller and kube-proxy see what a real one would see through the API server.
Order, as in a cluster: the EndpointSlice controller writes slices; every agent takes them in
(``lab`` waits for the manifest version); then kube-proxy's rules and the DNS names follow.
"""

from __future__ import annotations

import time

from novanet_core.state.manifests import ManifestSource
from novanet_core.state.model import ClusterState, parse_object
from novanet_lab import agents, dns, kubeproxy
from novanet_lab import state as lstate
from novanet_lab.manifests import ManifestWriter
from novanet_lab.paths import LabPaths
from novanet_lab.services import controller
from novanet_lab.state import LabState


def current(paths: LabPaths) -> ClusterState:
    """The cluster state as the agents see it now."""
    return ManifestSource(paths.manifest_dir).snapshot()


def write_slices(paths: LabPaths, writer: ManifestWriter) -> tuple[ClusterState, bool]:
    """Bring the controller's slices in step; returns the resulting state and whether files changed."""
    state = current(paths)
    want = controller.desired(state)
    changed = False
    for key in controller.managed(state) - set(want):
        ns, _, name = key.partition("/")
        writer.remove("EndpointSlice", name, ns)
        state.endpointslices.pop(key, None)
        changed = True
    for key, obj in want.items():
        parsed = parse_object(obj)
        if state.endpointslices.get(key) != parsed:
            writer.write(obj)
            state.endpointslices[key] = parsed  # type: ignore[assignment]
            changed = True
    return state, changed


def settle(paths: LabPaths, st: LabState, writer: ManifestWriter, deadline: float) -> ClusterState:
    """Slices, then (once every agent has them) kube-proxy rules and DNS; returns the final state."""
    state, changed = write_slices(paths, writer)
    if changed:
        st.manifestVersion = writer.bump()
        lstate.save(paths, st)
        agents.wait_ready(paths, st.nodes.values(), st.manifestVersion, max(1.0, deadline - time.monotonic()))
    kubeproxy.sync(st, state)
    dns.sync(paths, st, state)
    return state
