"""End to end: a real one-node lab (agent, dataplane, CNI, pod servers) driven through the CLI.

Every test uses a unique lab name and a fixture that always runs ``lab down``; the tests then
check that ``down`` left no netns, process, bpffs pin or directory behind.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from novanet_lab import agents, procs
from novanet_lab.netns import list_netns
from novanet_lab.paths import LabPaths

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.lab, pytest.mark.bpf]

NOVANET = str(Path(sys.executable).parent / "novanet")
PORTS = [{"name": "serve-80-tcp", "port": 80, "protocol": "TCP"}, {"name": "serve-80-udp", "port": 80, "protocol": "UDP"}]


def novanet(*args: str, check: bool = True, input: str | None = None, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([NOVANET, *args], capture_output=True, text=True, input=input, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"novanet {' '.join(args)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
    return r


def spec_for(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "cluster": {"clusterCIDR": "10.42.0.0/16", "routingMode": "overlay", "tunnelProtocol": "vxlan",
                    "policy": {"defaultDeny": False}},
        "nodes": [{"name": "node-1"}],
        "namespaces": [{"name": "x", "labels": {"ns": "x"}}, {"name": "y", "labels": {"ns": "y"}}],
        "pods": [
            {"name": "a", "namespace": "x", "labels": {"pod": "a"}, "ports": PORTS},
            {"name": "b", "namespace": "x", "labels": {"pod": "b"}, "ports": PORTS},
            {"name": "a", "namespace": "y", "labels": {"pod": "a"}, "ports": PORTS},
        ],
    }


def assert_gone(name: str, pids: list[int]) -> None:
    paths = LabPaths(name)
    assert list_netns(paths.netns_prefix) == []
    assert [p for p in pids if procs.is_running(p)] == []
    assert procs.find_lab_processes([], agents.markers(paths)) == []
    assert not paths.bpf_dir.exists()
    assert not paths.state_dir.exists() and not paths.run_dir.exists()


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    name = f"t{os.getpid()}-{secrets.token_hex(3)}"
    spec = tmp_path / "lab.yaml"
    spec.write_text(yaml.safe_dump(spec_for(name)))
    try:
        yield name, spec
    finally:
        novanet("lab", "down", "--name", name, "-q", check=False)


def status(name: str) -> dict[str, Any]:
    return json.loads(novanet("lab", "status", "--name", name, "-o", "json", check=False).stdout)


def lab_pids(st: dict[str, Any]) -> list[int]:
    pids = [n[d]["pid"] for n in st["nodes"] for d in ("agent", "dataplane")]
    pids += [p["server"]["pid"] for p in st["pods"]]
    return [p for p in pids if p]


def probe(name: str, *args: str) -> list[dict[str, Any]]:
    return json.loads(novanet("lab", "probe", "--name", name, "-o", "json", *args).stdout)["results"]


def test_lab_lifecycle(lab: tuple[str, Path]) -> None:
    name, spec = lab
    up = json.loads(novanet("lab", "up", "--spec", str(spec), "-q", "-o", "json").stdout)
    assert up["name"] == name and up["phase"] == "up" and up["healthy"] is True
    node = up["nodes"][0]
    assert node["agent"]["ready"] is True and node["agent"]["nodeName"] == "node-1"
    assert node["agent"]["stateVersion"] >= up["manifestVersion"]
    cidr = ipaddress.ip_network(node["podCIDR"])
    ips = {f"{p['namespace']}/{p['name']}": p["ip"] for p in up["pods"]}
    assert set(ips) == {"x/a", "x/b", "y/a"}
    assert all(ipaddress.ip_address(ip) in cidr for ip in ips.values())
    assert len(set(ips.values())) == 3
    pids = lab_pids(up)

    # Every pod reaches every pod on TCP and UDP...
    rs = probe(name)
    assert len(rs) == 3 * 3 * 2
    assert [r for r in rs if not r["allowed"]] == []
    assert {r["protocol"] for r in rs} == {"TCP", "UDP"}
    # ...and on ICMP (one lab exec per source: each novanet start costs a second or two here).
    for src in ips:
        loop = "; ".join(f"ping -c1 -W2 {ip} >/dev/null || echo FAILED {dst} {ip}" for dst, ip in ips.items() if dst != src)
        r = novanet("lab", "exec", "--name", name, src, "--", "sh", "-c", loop, check=False)
        assert r.returncode == 0 and "FAILED" not in r.stdout, f"ICMP from {src}: {r.stdout}{r.stderr}"

    # The table form: one e2e truth table per port/protocol.
    table = novanet("lab", "probe", "--name", name, "--port", "80", "--protocol", "TCP").stdout
    assert table.splitlines()[1:] == ["-\tx/a\tx/b\ty/a"] + [f"{s}\t.\t.\t." for s in ("x/a", "x/b", "y/a")]

    # apply: a label change and a new pod; returns once the agent has both.
    change = [
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "b", "namespace": "x", "labels": {"pod": "b", "role": "new"}},
         "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80, "protocol": "TCP", "name": "serve-80-tcp"},
                                                          {"containerPort": 80, "protocol": "UDP", "name": "serve-80-udp"}]}]}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "c", "namespace": "y", "labels": {"pod": "c"}},
         "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 81, "protocol": "TCP"}]}]}},
    ]
    out = novanet("lab", "apply", "--name", name, "-q", "-f", "-", input=yaml.safe_dump_all(change)).stdout
    assert out.splitlines() == ["pod/x/b configured", "pod/y/c created"]
    st = status(name)
    pods = {f"{p['namespace']}/{p['name']}": p for p in st["pods"]}
    assert pods["x/b"]["labels"] == {"pod": "b", "role": "new"} and pods["x/b"]["ip"] == ips["x/b"]
    assert pods["y/c"]["ready"] and ipaddress.ip_address(pods["y/c"]["ip"]) in cidr
    assert st["nodes"][0]["agent"]["stateVersion"] >= st["manifestVersion"]
    manifest = yaml.safe_load((LabPaths(name).manifest_dir / "pod_x_b.yaml").read_text())
    assert manifest["metadata"]["labels"] == {"pod": "b", "role": "new"}
    new = yaml.safe_load((LabPaths(name).manifest_dir / "pod_y_c.yaml").read_text())
    assert new["status"]["podIP"] == pods["y/c"]["ip"] and new["status"]["hostIP"] == st["nodes"][0]["ip"]
    rs = probe(name, "--to", "y/c")
    assert len(rs) == 4 and all(r["allowed"] and r["port"] == 81 for r in rs)
    # Applying the same thing again changes nothing.
    out = novanet("lab", "apply", "--name", name, "-q", "-f", "-", input=yaml.safe_dump_all(change)).stdout
    assert out.splitlines() == ["pod/x/b unchanged", "pod/y/c unchanged"]
    pids += lab_pids(st)

    # delete: CNI DEL, netns and manifest gone, the rest still talks.
    gone = {"kind": "Pod", "metadata": {"name": "a", "namespace": "x"}}
    out = novanet("lab", "delete", "--name", name, "-q", "-f", "-", input=yaml.safe_dump(gone)).stdout
    assert out.splitlines() == ["pod/x/a deleted"]
    assert not Path(f"/run/netns/{LabPaths(name).pod_netns('x', 'a')}").exists()
    assert not (LabPaths(name).manifest_dir / "pod_x_a.yaml").exists()
    st = status(name)
    assert {f"{p['namespace']}/{p['name']}" for p in st["pods"]} == {"x/b", "y/a", "y/c"}
    assert st["nodes"][0]["agent"]["endpoints"] == 3
    rs = probe(name, "--port", "80")
    assert {(r["from"], r["to"]) for r in rs} == {(s, d) for s in ("x/b", "y/a", "y/c") for d in ("x/b", "y/a", "y/c")}
    assert all(r["allowed"] for r in rs if r["to"] != "y/c")
    # Deleting it again is a NotFound error that names it.
    r = novanet("lab", "delete", "--name", name, "-q", "-f", "-", input=yaml.safe_dump(gone), check=False)
    assert r.returncode == 1 and 'pods "x/a" not found' in r.stderr

    down = json.loads(novanet("lab", "down", "--name", name, "-o", "json").stdout)
    assert sorted(down["cniDel"]) == ["x/b", "y/a", "y/c"] and down["cniDelErrors"] == []
    assert down["bpfPins"] > 0
    assert_gone(name, pids)
    r = novanet("lab", "status", "--name", name, check=False)
    assert r.returncode == 1 and "does not exist" in r.stderr


def test_up_refuses_existing_lab_and_replace_works(lab: tuple[str, Path]) -> None:
    name, spec = lab
    novanet("lab", "up", "--spec", str(spec), "-q")
    r = novanet("lab", "up", "--spec", str(spec), "-q", check=False)
    assert r.returncode == 1 and f"lab {name} already exists" in r.stderr
    st = json.loads(novanet("lab", "up", "--spec", str(spec), "-q", "--replace", "-o", "json").stdout)
    assert st["healthy"] is True and len(st["pods"]) == 3
