"""Load a NovaNet config: built-in defaults < file (YAML or JSON) < environment < explicit overrides.

Every error names the key (``policy.defaultDeny: Input should be a valid boolean``), whether it
came from the file or from an environment variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from novanet_core.backends import ConfigError
from novanet_core.config.fielderrors import field_errors
from novanet_core.config.models import NovaNetConfig

# Environment variable -> dotted config key. Documented in docs/configuration.md.
ENV_KEYS = {
    "NOVANET_NODE_NAME": "nodeName",
    "NOVANET_NODE_IP": "nodeIP",
    "NOVANET_CLUSTER_CIDR": "clusterCIDR",
    "NOVANET_SERVICE_CIDR": "serviceCIDR",
    "NOVANET_KUBE_PROXY_REPLACEMENT": "kubeProxyReplacement",
    "NOVANET_POD_CIDR": "podCIDR",
    "NOVANET_ROUTING_MODE": "routingMode",
    "NOVANET_TUNNEL_PROTOCOL": "tunnelProtocol",
    "NOVANET_DATAPATH": "datapath",
    "NOVANET_MTU": "mtu",
    "NOVANET_IPAM_TYPE": "ipam.type",
    "NOVANET_IPAM_DATA_DIR": "ipam.dataDir",
    "NOVANET_POLICY_DEFAULT_DENY": "policy.defaultDeny",
    "NOVANET_EGRESS_MASQUERADE_ENABLED": "egress.masqueradeEnabled",
    "NOVANET_BPF_ROOT": "bpf.root",
    "NOVANET_AGENT_SOCKET": "sockets.agent",
    "NOVANET_CNI_SOCKET": "sockets.cni",
    "NOVANET_DATAPLANE_SOCKET": "sockets.dataplane",
    "NOVANET_METRICS_ADDRESS": "metrics.address",
    "NOVANET_METRICS_DATAPLANE_ADDRESS": "metrics.dataplaneAddress",
    "NOVANET_LOG_LEVEL": "logLevel",
    "NOVANET_FLOWS_EXPORT_FILE": "flows.export.file",
    "NOVANET_FLOWS_EXPORT_SOCKET": "flows.export.socket",
    "NOVANET_STATE_SOURCE": "stateSource.type",
    "NOVANET_STATE_PATH": "stateSource.path",
}


def _set(d: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    for p in parts[:-1]:
        d = d.setdefault(p, {})
        if not isinstance(d, dict):
            raise ConfigError(f"{dotted}: cannot set inside a non-map value")
    d[parts[-1]] = value


def _env_value(key: str, raw: str) -> Any:
    if key == "mtu" and raw.isascii() and raw.isdigit():  # isdigit() alone takes "²", int() does not
        return int(raw)
    return raw  # pydantic parses "true"/"1"/"false"/"0" for booleans


def format_validation_error(e: ValidationError, origin: Mapping[str, str] | None = None) -> str:
    lines = []
    for loc, msg in field_errors(e, missing=None):
        path = ".".join(str(p) for p in loc) or "(root)"
        src = f" (from {origin[path]})" if origin and path in origin else ""
        lines.append(f"{path}: {msg}{src}")
    return "invalid config: " + "; ".join(lines)


def load_config(
    path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> NovaNetConfig:
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            text = p.read_text()
        except FileNotFoundError:
            raise ConfigError(f"config file {p} does not exist") from None
        try:
            loaded = yaml.safe_load(text)  # YAML is a superset of JSON
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {p} is not valid YAML/JSON: {e}") from None
        except RecursionError:  # PyYAML's composer recurses once per nesting level
            raise ConfigError(f"config file {p}: nested too deeply to be a config") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {p}: top level must be a map of config keys")
        data = loaded or {}
    origin: dict[str, str] = {}
    for var, key in ENV_KEYS.items():
        raw = (env if env is not None else os.environ).get(var)
        if raw is not None and raw != "":
            _set(data, key, _env_value(key, raw))
            origin[key] = f"${var}"
    for key, value in (overrides or {}).items():
        _set(data, key, value)
    try:
        return NovaNetConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, origin)) from None
