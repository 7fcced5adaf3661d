"""The plugin as a user gets it: built into its own wheel, pip-installed into a venv of its own,
found by the core through its entry point, selected by config in a 3-node lab, and carrying the
netpol conformance subset (tests/overlay/test_netpol_3node.py) across nodes without encapsulation.

The venv is made in a temporary directory and layered on the project's venv (a ``.pth`` adds its
site-packages: the core, the first-party plugins and their dependencies) with the core's console
scripts written for its interpreter, so the lab's daemons run from it. The plugin exists only
there: the project's venv never has it, and the directory goes with the test.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests import netpol_cases as nc
from tests.conformance import test_netpol_conformance as conf
from tests.overlay import test_netpol_3node as netpol3
from tests.overlay.helpers import Capture, agent, ping

# The 3-node conformance tests, collected here too: their fixtures take this module's lab3.
from tests.overlay.test_netpol_3node import (  # noqa: F401
    pod_ips3,
    replayer3,
    test_model_is_spread_over_three_nodes,
    test_upstream_case_across_nodes,
)
from tests.support.lab import LabUnderTest

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.lab, pytest.mark.bpf, pytest.mark.slow]

PLUGIN_DIR = Path(__file__).resolve().parents[1]
ROOT = PLUGIN_DIR.parents[1]
CLUSTER = {"clusterCIDR": "10.42.0.0/16", "routingMode": "native", "routing": {"type": "hostgw"},
           "datapath": "ebpf", "policy": {"defaultDeny": False}}


def _run(argv: list[str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(argv)} exited {r.returncode}:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    return r


def build_wheel(tmp: Path) -> Path:
    """``pip wheel`` of a copy of the plugin (the build's own files stay out of the work tree)."""
    src = tmp / "src"
    shutil.copytree(PLUGIN_DIR, src, ignore=shutil.ignore_patterns("*.egg-info", "build", "__pycache__", ".*"))
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--disable-pip-version-check",
          "-q", str(src), "-w", str(tmp / "dist")])
    (wheel,) = (tmp / "dist").glob("*.whl")
    return wheel


def make_venv(tmp: Path) -> Path:
    """A venv on top of this one, holding nothing of its own yet; returns its bin directory."""
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    py = venv / "bin" / "python"
    site = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    (site / "novanet_base.pth").write_text(f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n")
    # The core's console scripts, as pip writes them, for this interpreter: the lab starts the
    # daemons and the CNI client found next to the interpreter that runs it.
    for ep in md.distribution("novanet").entry_points.select(group="console_scripts"):
        script = venv / "bin" / ep.name
        script.write_text(f"#!{py}\nimport sys\nfrom {ep.module} import {ep.attr}\nsys.exit({ep.attr}())\n")
        script.chmod(0o755)
    return venv / "bin"


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    tmp = tmp_path_factory.mktemp("hgw-wheel")
    try:
        wheel = build_wheel(tmp)
        bin_dir = make_venv(tmp)
        # Without --no-deps and without an index: the wheel's requirements must be met by what is installed.
        _run([sys.executable, "-m", "pip", "--python", str(bin_dir / "python"), "install", "--no-index",
              "--disable-pip-version-check", "-q", str(wheel)])
        yield wheel, bin_dir
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def lab3(wheel_env: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabUnderTest]:
    spec = yaml.safe_load((ROOT / "examples" / "lab-netpol-3node.yaml").read_text())
    spec.pop("name", None)
    spec["cluster"] = CLUSTER
    with netpol3.spread_lab(spec, tmp_path_factory.mktemp("hgw-lab"), wheel_env[1]) as lab:
        yield lab


@pytest.fixture
def no_policies(request: pytest.FixtureRequest) -> None:
    """No policies and the model's labels, whatever ran before (a conformance case leaves its own)."""
    request.getfixturevalue("replayer3").reset()


def test_wheel_holds_the_package_and_its_entry_point(wheel_env: tuple[Path, Path]) -> None:
    wheel, bin_dir = wheel_env
    zf = zipfile.ZipFile(wheel)
    assert {"novanet_hostgw/plugin.py", "novanet_hostgw/backend.py"} <= set(zf.namelist())
    eps = zf.read(next(n for n in zf.namelist() if n.endswith("entry_points.txt"))).decode()
    assert "[novanet.plugins]\nhostgw = novanet_hostgw.plugin" in eps
    # Installed in the venv made for it, and only there.
    where = _run([str(bin_dir / "python"), "-c", "import importlib.metadata as md; "
                  "print(md.distribution('novanet-hostgw').locate_file(''))"]).stdout.strip()
    assert Path(where).is_relative_to(bin_dir.parent)
    with pytest.raises(md.PackageNotFoundError):
        md.distribution("novanet-hostgw")


def test_agents_run_the_plugin_from_the_wheel(lab3: LabUnderTest) -> None:
    # the CLI once; the other nodes through the same agent API methods it calls
    shown = {"plugins": lab3.ctl("plugins"), "status": lab3.ctl("status")}
    for node in ("node-1", "node-2", "node-3"):
        if node != "node-1":
            shown = {"plugins": agent(lab3, node, "plugins.list"), "status": agent(lab3, node, "status")}
        plugin = next(p for p in shown["plugins"] if p["name"] == "hostgw")
        assert (plugin["distribution"], plugin["active"], plugin["backends"]) == ("novanet-hostgw", True,
                                                                                 ["routing:hostgw"]), plugin
        routing = shown["status"]["routing"]
        assert routing["backend"] == "hostgw" and routing["connected"] is True, routing
        assert len(routing["routes"]) == 2 and all(r["installed"] for r in routing["routes"]), routing
        assert routing == {"backend": "hostgw", **agent(lab3, node, "hostgw.routes")}


@pytest.mark.usefixtures("no_policies")
def test_remote_podcidrs_route_via_the_nodes_without_encapsulation(lab3: LabUnderTest) -> None:
    nodes = {n["name"]: n for n in lab3.status()["nodes"]}
    for name in nodes:
        out = lab3.run_in(lab3.node_netns(name), "ip", "-j", "route", "show", "proto", "99")
        got = {r["dst"]: (r.get("gateway"), r["dev"]) for r in json.loads(out.stdout) if r["dst"].endswith("/24")}
        assert got == {o["podCIDR"]: (o["ip"], "eth0") for n2, o in nodes.items() if n2 != name}, (name, got)
        links = json.loads(lab3.run_in(lab3.node_netns(name), "ip", "-j", "-d", "link", "show").stdout)
        assert not [ln["ifname"] for ln in links if ln.get("linkinfo", {}).get("info_kind") in ("vxlan", "geneve")]
    # A pod-to-pod ping across nodes is plain IP on the underlay: the pods' own addresses, ICMP.
    src, dst = lab3.pod_ip("x/a"), lab3.pod_ip("x/b")
    cap = Capture(lab3, "node-2", f"icmp and src host {src} and dst host {dst}", ["ip.src", "ip.dst", "ip.proto"],
                  count=1)
    try:
        r = ping(lab3, "x/a", dst, count=3)
        assert r.returncode == 0, r.stdout + r.stderr
        rows = cap.rows()
    finally:
        cap.stop()
    assert rows and rows[0] == {"ip.src": src, "ip.dst": dst, "ip.proto": "1"}, rows


@pytest.mark.usefixtures("no_policies")
def test_all_pods_reach_each_other_across_nodes(lab3: LabUnderTest) -> None:
    cells, reasons = conf.probe_table(lab3, "TCP", 80)
    blocked = sorted((f, t) for f in nc.PODS for t in nc.PODS if f != t and not cells.get((f, t)))
    assert not blocked, [(f, t, reasons.get((f, t))) for f, t in blocked]
