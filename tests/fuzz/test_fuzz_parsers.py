"""Fuzzing every parser of hostile input for a few seconds each (bench/fuzz.py runs minutes).

Each target asserts: the documented error type with a message naming the field, never another
exception, and (where there is state) the state that was fine before is unchanged after.
"""

from __future__ import annotations

import pytest

from tests.fuzz import harness, targets


def test_fuzz_manifest_objects() -> None:
    harness.assert_clean(harness.run("manifest-objects", targets.manifest_objects, targets.check_manifest_object,
                                     harness.budget(6)))


def test_fuzz_manifest_files_keep_good_state() -> None:
    d = targets.ManifestDir()
    try:
        harness.assert_clean(harness.run("manifest-files", targets.manifest_files(), d.check, harness.budget(6)))
    finally:
        d.close()


def test_fuzz_network_policy() -> None:
    w = targets.PolicyWorld()
    harness.assert_clean(harness.run("networkpolicy", targets.policy_specs(), w.check, harness.budget(6)))


def test_fuzz_agent_config() -> None:
    harness.assert_clean(harness.run("agent-config", targets.agent_configs(), targets.check_agent_config,
                                     harness.budget(6)))


def test_fuzz_lab_spec() -> None:
    harness.assert_clean(harness.run("lab-spec", targets.lab_specs(), targets.check_lab_spec, harness.budget(6)))


def test_fuzz_cni_client_without_agent(tmp_path) -> None:
    check = targets.make_cni_check(str(tmp_path))
    harness.assert_clean(harness.run("cni-client", targets.cni_inputs(), check, harness.budget(6)))


@pytest.mark.parametrize("bad", [b"\xff\xfe{", b'{"cniVersion":"1.1.0","name":"\xc3"}'])
def test_cni_binary_survives_undecodable_stdin(bad: bytes, tmp_path) -> None:
    import json
    import subprocess
    import sys
    from pathlib import Path

    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "abc", "CNI_NETNS": "/run/netns/none", "CNI_IFNAME": "eth0"}
    p = subprocess.run([str(Path(sys.executable).parent / "novanet-cni")], input=bad, capture_output=True, env=env,
                       timeout=30)
    assert b"Traceback" not in p.stderr, p.stderr.decode(errors="replace")
    assert p.returncode == 1
    out = json.loads(p.stdout)
    assert out["code"] == 6 and "stdin" in out["msg"]
