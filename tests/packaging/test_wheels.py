"""Every distribution (the core and each plugin) installs from its own wheel into a fresh venv and
works there: entry points discovered, BPF sources shipped inside the package."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import venv
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = sorted(p for p in (ROOT / "plugins").iterdir() if (p / "pyproject.toml").exists())

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("wheels")
    out = tmp / "dist"
    junk = shutil.ignore_patterns("*.egg-info", "build", "__pycache__", ".*")

    def build(src: Path) -> subprocess.CompletedProcess[str]:
        # Build from a copy so build/ and egg-info never land in the work tree.
        copy = tmp / "src" / src.name

        def ignore(d: str, names: list[str]) -> set[str]:
            top = {"plugins", "tests", "bench", "docs"} if Path(d) == src else set()
            return set(junk(d, names)) | (top & set(names))

        shutil.copytree(src, copy, ignore=ignore)
        # --no-build-isolation: the build backend (setuptools, wheel) comes from this venv (the
        # test extra) instead of a build environment fetched per wheel, 25 s each here.
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--no-deps",
                "--no-build-isolation",
                "--disable-pip-version-check",
                str(copy),
                "-w",
                str(out),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )

    with ThreadPoolExecutor(max_workers=2) as pool:
        for p in pool.map(build, [ROOT, *PLUGINS]):
            assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    return {w.name.split("-")[0]: w for w in out.glob("*.whl")}


def test_every_plugin_wheel_carries_its_package_and_entry_point(wheels):
    assert "novanet" in wheels
    for plugin in PLUGINS:
        dist = plugin.name
        whl = wheels[f"novanet_{dist.replace('-', '_')}"]
        names = zipfile.ZipFile(whl).namelist()
        ep = next(n for n in names if n.endswith("entry_points.txt"))
        assert "[novanet.plugins]" in zipfile.ZipFile(whl).read(ep).decode()
        c_sources = [n for n in (plugin.rglob("*.c"))]
        for c in c_sources:
            rel = c.relative_to(plugin).as_posix()
            assert rel in names, f"{rel} (BPF source) is missing from {whl.name}"


def test_fresh_venv_with_only_the_wheels_discovers_every_plugin(wheels, tmp_path):
    env_dir = tmp_path / "venv"
    # No pip inside (ensurepip: ~8 s): this venv's pip installs into it (`--python`), and without
    # byte-compiling the dependencies (the kubernetes client alone is thousands of modules): a
    # third of the install's time, and nothing this test checks.
    venv.create(env_dir, with_pip=False)
    py = env_dir / "bin" / "python"
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(py),
            "install",
            "-q",
            "--no-compile",
            "--disable-pip-version-check",
            *[str(w) for w in wheels.values()],
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    probe = (
        "import json, importlib.resources as r\n"
        "from novanet_core.config.models import NovaNetConfig\n"
        "from novanet_core.plugins.manager import PluginHost\n"
        "h = PluginHost(NovaNetConfig(), 'cli')\n"
        "out = {'plugins': sorted(x['name'] for x in h.info() if not x.get('error')),\n"
        "       'broken': {x['name']: x['error'] for x in h.info() if x.get('error')},\n"
        "       'backends': sorted(f'{e.kind}:{e.name}' for e in h.registry.entries())}\n"
        "try:\n"
        "    out['ebpf_src'] = r.files('novanet_ebpf_policy').joinpath('bpf/datapath.c').is_file()\n"
        "except ModuleNotFoundError:\n"
        "    out['ebpf_src'] = None\n"
        "print(json.dumps(out))\n"
    )
    # The venv has no BCC (a Debian package): plugins must still import (BCC is loaded lazily).
    p = subprocess.run([str(py), "-c", probe], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout)
    assert out["broken"] == {}
    expected_eps = set()
    for plugin in PLUGINS:
        text = (plugin / "pyproject.toml").read_text()
        section = text.split('[project.entry-points."novanet.plugins"]')[1].split("[")[0]
        expected_eps |= {line.split("=")[0].strip() for line in section.splitlines() if "=" in line}
    assert expected_eps <= set(out["plugins"])
    assert {
        "ipam:host-local",
        "datapath:ebpf",
        "datapath:kernel",
        "tunnel:vxlan",
        "state-source:manifests",
    } <= set(out["backends"])
    assert out["ebpf_src"] is True
    # The lab is a plugin too: its wheel adds `novanet lab` to the core's `novanet` command.
    p = subprocess.run(
        [str(env_dir / "bin" / "novanet"), "lab", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert p.returncode == 0 and "warning" not in p.stderr, p.stdout + p.stderr
    assert all(f"  {cmd}" in p.stdout for cmd in ("up", "down", "status", "probe", "restart")), p.stdout
