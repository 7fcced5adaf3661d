"""The plugin as a distribution: its wheel, its entry point, and discovery by the core's PluginHost."""

from __future__ import annotations

import configparser
import importlib.metadata as md
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import novanet_host_local_ipam.plugin as plugin_module
import pluggy
import pytest

from novanet_core import hookspecs
from novanet_core.backends import BackendContext, BackendRegistry, IpamBackend
from novanet_core.config.models import NovaNetConfig
from novanet_core.types import IpamRequest

PLUGIN_DIR = Path(__file__).resolve().parents[1]
DIST = "novanet-host-local-ipam"
EP_NAME = "host-local-ipam"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Build from a copy so the build's egg-info/build dirs never land in the shared work tree.
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(
        PLUGIN_DIR, src, ignore=shutil.ignore_patterns("*.egg-info", "build", "__pycache__", ".*")
    )
    out = tmp / "dist"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--disable-pip-version-check",
            str(src),
            "-w",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    wheels = list(out.glob("*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_is_named_after_the_distribution_and_holds_the_package(wheel: Path) -> None:
    assert wheel.name.startswith("novanet_host_local_ipam-0.1.0-py3-none-any")
    names = set(zipfile.ZipFile(wheel).namelist())
    for mod in ("__init__.py", "plugin.py", "backend.py", "store.py", "pool.py", "py.typed"):
        assert f"novanet_host_local_ipam/{mod}" in names
    assert not any(n.startswith("tests/") for n in names)


def test_wheel_declares_entry_point_in_novanet_plugins_group_and_depends_on_novanet(wheel: Path) -> None:
    zf = zipfile.ZipFile(wheel)
    ep_file = next(n for n in zf.namelist() if n.endswith(".dist-info/entry_points.txt"))
    eps = configparser.ConfigParser()
    eps.read_string(zf.read(ep_file).decode())
    assert dict(eps["novanet.plugins"]) == {EP_NAME: "novanet_host_local_ipam.plugin"}
    meta = zf.read(next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    assert "Name: novanet-host-local-ipam" in meta
    assert "Requires-Dist: novanet" in meta


def test_hookimpl_registers_the_host_local_ipam_backend_through_pluggy() -> None:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(plugin_module, name=EP_NAME)
    pm.check_pending()
    registry = BackendRegistry()
    registry.current_plugin = EP_NAME
    pm.hook.novanet_register_backends.call_historic(kwargs={"registry": registry})
    entry = registry.get("ipam", "host-local")
    assert entry is not None
    assert entry.factory is plugin_module.create_backend
    assert "PodCIDR" in entry.description
    assert registry.names("ipam") == ["host-local"]


def _installed_entry_point() -> md.EntryPoint | None:
    return next((ep for ep in md.entry_points(group="novanet.plugins") if ep.name == EP_NAME), None)


def test_installed_distribution_exposes_the_entry_point() -> None:
    ep = _installed_entry_point()
    assert ep is not None, f"{DIST} is not installed: run .venv/bin/pip install -e plugins/host-local-ipam"
    assert ep.value == "novanet_host_local_ipam.plugin"
    assert ep.dist is not None and ep.dist.name == DIST


def test_plugin_host_discovers_plugin_by_entry_point_and_creates_working_backend(tmp_path: Path) -> None:
    from novanet_core.plugins import manager

    assert _installed_entry_point() is not None, (
        f"{DIST} is not installed: run .venv/bin/pip install -e {PLUGIN_DIR}"
    )
    cfg = NovaNetConfig(podCIDR="10.42.0.0/24", datapath="kernel", ipam={"dataDir": str(tmp_path / "ipam")})
    host = manager.PluginHost(cfg, "agent")
    entry = host.registry.get("ipam", "host-local")
    assert entry is not None
    assert entry.plugin == EP_NAME
    record = host.records[EP_NAME]
    assert (record.distribution, record.builtin, record.backends) == (DIST, False, ["ipam:host-local"])
    assert "novanet_register_backends" in record.hooks

    assert host.select(["ipam"])["ipam"] is entry
    backend = host.create("ipam", BackendContext(config=cfg, component="agent"))
    assert isinstance(backend, IpamBackend)
    a = backend.allocate(IpamRequest("c1", "eth0"))
    assert (a.address, a.gateway, a.prefix_len) == ("10.42.0.2", "10.42.0.1", 24)
    assert (tmp_path / "ipam" / "10.42.0.2").exists()
