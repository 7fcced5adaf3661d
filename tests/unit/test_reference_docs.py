"""docs/cli.md and docs/configuration.md are generated from the code and must match it."""

from __future__ import annotations

import click
import pytest

from novanet_core.cli.novanetctl import build_cli
from novanet_core.cli.reference import CLI_MD, cli_markdown
from novanet_core.cli.tree import walk
from novanet_core.config.reference import CONFIG_MD, UndocumentedKey, config_markdown, keys

HINT = "regenerate with: python -m novanet_core.cli.reference --write"


def test_cli_md_is_generated_from_the_commands() -> None:
    assert CLI_MD.read_text() == cli_markdown(), HINT


def test_configuration_md_is_generated_from_the_models() -> None:
    assert CONFIG_MD.read_text() == config_markdown(), HINT


def test_every_command_with_json_output_declares_its_shape() -> None:
    missing = []
    for path, cmd in walk(build_cli()):
        takes_o = any(isinstance(p, click.Option) and "--output" in p.opts for p in cmd.params)
        if path and takes_o and not getattr(cmd.callback, "__novanet_json_shape__", None):
            missing.append(" ".join(path))
    assert not missing, f"commands with -o but no json_shape: {missing}"


def test_every_config_key_is_documented_and_every_env_names_a_key() -> None:
    assert all(f.description for _, f in keys())
    assert {"egress.masqueradeEnabled", "policy.defaultDeny", "metrics.dataplaneAddress",
            "flows.export.file"} <= {k for k, _ in keys()}


def test_an_undocumented_key_fails_the_generator(monkeypatch: pytest.MonkeyPatch) -> None:
    from novanet_core.config import models

    monkeypatch.setattr(models.EgressConfig.model_fields["masqueradeEnabled"], "description", None)
    with pytest.raises(UndocumentedKey, match="egress.masqueradeEnabled"):
        config_markdown()
