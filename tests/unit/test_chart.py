"""The Helm chart's config block is a valid NovaNet config, and the chart names what the guide names."""

from __future__ import annotations

from pathlib import Path

import yaml

from novanet_core.config.models import NovaNetConfig

CHART = Path(__file__).resolve().parents[2] / "charts" / "novanet"


def test_values_config_block_validates_against_the_config_model():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    cfg = NovaNetConfig.model_validate(values["config"])
    assert cfg.bpf.root == "/sys/fs/bpf/novanet"
    assert cfg.ipam.dataDir == "/var/lib/cni/networks/novanet"
    assert cfg.stateSource.type == "kubernetes"


def test_daemonset_uses_the_guide_names():
    ds = (CHART / "templates" / "daemonset.yaml").read_text()
    assert "name: novanet-agent" in ds and "name: novanet-dataplane" in ds
    assert "mountPropagation: Bidirectional" in ds and "/sys/fs/bpf" in ds
    assert "namespace: {{ .Values.namespace }}" in ds
    assert yaml.safe_load((CHART / "values.yaml").read_text())["namespace"] == "nova-system"
