"""Registers the ``kubernetes`` state source (``stateSource.type: kubernetes``)."""

from __future__ import annotations

from novanet_core.backends import BackendContext, BackendRegistry
from novanet_core.config.models import NovaNetConfig
from novanet_core.hookspecs import hookimpl

NOVANET_PLUGIN_API = ">=1.0,<2"  # the NovaNet plugin API versions this plugin works with


def _factory(ctx: BackendContext):  # type: ignore[no-untyped-def]
    from novanet_kube_source.source import KubernetesSource

    s = ctx.config.pluginSettings.get("kubernetes-source", {})
    return KubernetesSource(kubeconfig=ctx.config.stateSource.kubeconfig, host=s.get("apiServer"),
                            watch_timeout=int(s.get("watchTimeoutSeconds", 60)), ca_file=s.get("caFile"),
                            insecure_skip_tls_verify=bool(s.get("insecureSkipTLSVerify", False)))


@hookimpl
def novanet_register_backends(registry: BackendRegistry) -> None:
    registry.add("state-source", "kubernetes", _factory,
                 description="list+watch of Nodes, Namespaces, Pods, NetworkPolicies from the Kubernetes API")


@hookimpl
def novanet_validate_config(config: NovaNetConfig) -> list[str]:
    if config.stateSource.type != "kubernetes":
        return []
    s = config.pluginSettings.get("kubernetes-source", {})
    errors = []
    unknown = set(s) - {"apiServer", "watchTimeoutSeconds", "caFile", "insecureSkipTLSVerify"}
    if unknown:
        errors.append(f"pluginSettings.kubernetes-source: unknown key(s) {', '.join(sorted(unknown))}")
    host = s.get("apiServer")
    if host is not None and (not isinstance(host, str) or not host.startswith(("http://", "https://"))):
        errors.append("pluginSettings.kubernetes-source.apiServer: must be an http(s):// URL")
    ca = s.get("caFile")
    if ca is not None and (not isinstance(ca, str) or not ca.startswith("/")):
        errors.append("pluginSettings.kubernetes-source.caFile: must be an absolute path to a PEM CA bundle")
    if not isinstance(s.get("insecureSkipTLSVerify", False), bool):
        errors.append("pluginSettings.kubernetes-source.insecureSkipTLSVerify: must be true or false")
    t = s.get("watchTimeoutSeconds", 60)
    if isinstance(t, bool) or not isinstance(t, int) or not 1 <= t <= 3600:
        errors.append("pluginSettings.kubernetes-source.watchTimeoutSeconds: must be an integer 1..3600")
    return errors
