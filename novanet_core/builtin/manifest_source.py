"""Built-in plugin: the local-manifest state source (``stateSource.type: manifests``)."""

from __future__ import annotations

from novanet_core.backends import BackendRegistry
from novanet_core.hookspecs import hookimpl
from novanet_core.state.manifests import ManifestSource


@hookimpl
def novanet_register_backends(registry: BackendRegistry) -> None:
    registry.add(
        "state-source",
        "manifests",
        lambda ctx: ManifestSource(ctx.config.stateSource.path),
        description="Kubernetes-style YAML manifests in a watched directory (the lab's source)",
    )
