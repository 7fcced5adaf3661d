"""Each input the fuzzers found mishandled, kept as a fixed case so the fix cannot regress even
when a short fuzz run does not happen to reach it again."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from novanet_core.state.model import ObjectError, parse_object
from tests.fuzz import seeds


def _with(doc: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    d = copy.deepcopy(doc)
    t = d
    for p in path[:-1]:
        t = t[p]
    t[path[-1]] = value
    return d


@pytest.mark.parametrize("doc, field", [
    (_with(seeds.POD, ("status",), [{"podIP": "10.42.1.5"}]), "status"),  # AttributeError: list.get
    (_with(seeds.NODE, ("status", "addresses"), True), "status.addresses"),  # TypeError: bool not iterable
    (_with(seeds.NODE, ("status",), ["x"]), "status"),  # AttributeError: list.get
    (_with(seeds.NODE, ("spec", "podCIDR"), 2147483648), "spec.podCIDR"),  # int taken as 128.0.0.0/32
    (_with(seeds.POD, ("status", "podIP"), 167772161), "status.podIP"),  # int taken as 10.0.0.1
    (_with(seeds.POD, ("spec", "nodeName"), ["node-1"]), "spec.nodeName"),  # list kept as the node name
    (_with(seeds.POD, ("metadata", "labels"), {"app": {"a": 1}}), "metadata.labels.app"),  # map kept as str(map)
    (_with(seeds.POD, ("metadata", "name"), "a/b"), "metadata.name"),  # "/" made x/a/b, an ambiguous key
    (_with(seeds.POD, ("metadata", "namespace"), "x y"), "metadata.namespace"),
    (_with(seeds.POD, ("status", "conditions"), True), "status.conditions"),  # TypeError: bool not iterable
])
def test_manifest_field_errors(doc: dict[str, Any], field: str) -> None:
    with pytest.raises(ObjectError) as ei:
        parse_object(doc)
    assert ei.value.path == field, str(ei.value)


DEEP = "[" * 3000 + "]" * 3000  # valid YAML; PyYAML's composer recurses once per level


def test_deeply_nested_yaml_is_a_clear_error_everywhere(tmp_path) -> None:
    """RecursionError escaped every YAML reader: a traceback from `novanet lab up`/`lab apply` and
    the agent's config, and in the manifest source it stopped the scan half-way, so files changed
    in the same pass were never loaded."""
    from novanet_core.backends import ConfigError
    from novanet_core.config.loader import load_config
    from novanet_core.state.manifests import ManifestSource
    from tests.fuzz.targets import _lab

    spec, lab_error = _lab()
    with pytest.raises(lab_error, match="nested too deeply"):
        spec.load_spec_text(f"nodes: {DEEP}")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"mtu: {DEEP}")
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_config(cfg)
    d = tmp_path / "m"
    d.mkdir()
    (d / "a.yaml").write_text(f"kind: Pod\nmetadata: {DEEP}\n")
    (d / "b.yaml").write_text("kind: Namespace\nmetadata: {name: kept}\n")
    src = ManifestSource(d)
    assert "kept" in src.snapshot().namespaces
    assert any("nested too deeply" in e for e in src.errors)


def test_mtu_from_the_environment_with_a_unicode_digit_is_a_field_error() -> None:
    """Found by the long agent-config run: NOVANET_MTU="²" passed str.isdigit() and int() raised."""
    from novanet_core.backends import ConfigError
    from novanet_core.config.loader import load_config

    with pytest.raises(ConfigError, match=r"^invalid config: mtu"):
        load_config(None, env={"NOVANET_MTU": "²"})


@pytest.mark.parametrize("key", ["protoco:", "N\x85t\r", "fe80::1%eth0"])
def test_lab_spec_paths_quote_keys_that_would_garble_them(key: str) -> None:
    """Found by the long lab-spec runs (hypothesis and atheris): an unknown key holding a colon or
    a control character made 'pods[0].ports[0].<key>: unknown key' unreadable. The quoted form
    must also count as naming the field (the 45-s run of 2026-12-01 evening reported
    'fe80::1%eth0' as a finding: the check's pattern did not know quoted keys)."""
    from tests.fuzz.targets import _lab, _names_field

    spec, lab_error = _lab()
    doc = {"nodes": [{"name": "node-1"}], "pods": [{"name": "a", "ports": [{"port": 80, key: 1}]}]}
    with pytest.raises(lab_error) as ei:
        spec.parse_spec(doc)
    assert f"pods[0].ports[0].{key!r}: unknown key" in str(ei.value)
    assert _names_field(str(ei.value).split("\n", 1)[-1])


@pytest.mark.parametrize("remote, field", [
    ({"ip": "10.42.77.5", "identity": 60001}, "remote.node_ip"),  # TypeError: missing node_ip
    ({"ip": "10.42.77.5", "identity": 60001, "node_ip": ""}, "remote.node_ip"),  # kept, undeliverable
])
def test_remote_without_a_node_address_is_a_field_error(remote: dict[str, Any], field: str) -> None:
    from novanet_core.api.protocol import ApiError
    from novanet_core.dataplane.endpoint_params import parse_remote

    with pytest.raises(ApiError, match=field.replace(".", r"\.")) as e:
        parse_remote(remote)
    assert e.value.code == "invalid_params"
