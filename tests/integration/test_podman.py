"""A real CNI client: podman 4.3 (CNI backend, runc) runs busybox containers on NovaNet.

The network is exactly what ``novanet install-cni`` installs (the binary and the shipped conflist:
cniVersion 1.0.0, novanet-cni chained with the reference portmap and bandwidth plugins); only
``--agent-socket`` points at the test node's agent. podman runs inside the node's network
namespace, as a node's runtime does, so that portmap's NAT rules land in the node, never in the
machine's own namespace.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.support.busybox import rootfs_tar
from tests.support.cni_clients import install_cni
from tests.support.node import ROOT, sh

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.podman, pytest.mark.slow]

ULIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096"]


def busybox_image(tmp_path: Path, env: dict[str, str], tag: str) -> str:
    image = f"localhost/novanet-test-busybox:{tag}"
    subprocess.run(["podman", "import", str(rootfs_tar(tmp_path)), image], check=True, capture_output=True, env=env)
    return image


@pytest.fixture
def podman_env(tmp_path, kernel_node):
    if not shutil.which("podman") or not shutil.which("runc") or not os.path.exists("/bin/busybox"):
        pytest.fail("podman, runc and busybox-static are required (contrib/install-deps.sh installs them)")
    tag = uuid.uuid4().hex[:6]
    bindir, netdir = install_cni(kernel_node, tmp_path / "host")
    installed = json.loads((netdir / "10-novanet.conflist").read_text())
    shipped = json.loads((ROOT / "contrib" / "10-novanet.conflist").read_text())
    shipped["plugins"][0]["agentSocket"] = kernel_node.config["sockets"]["cni"]
    assert installed == shipped  # the shipped conflist, with --agent-socket the only difference
    conf = tmp_path / "containers.conf"
    conf.write_text(
        '[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\nruntime = "runc"\n'
        f'[network]\nnetwork_backend = "cni"\ncni_plugin_dirs = ["{bindir}", "/usr/lib/cni"]\n'
        f'network_config_dir = "{netdir}"\n')
    env = {**os.environ, "CONTAINERS_CONF": str(conf)}
    image = busybox_image(tmp_path, env, tag)
    names: list[str] = []

    def podman(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["nsenter", f"--net=/run/netns/{kernel_node.ns}", "podman", *args],
                              capture_output=True, text=True, env=env, timeout=timeout)

    try:
        yield kernel_node, installed["name"], image, podman, names
    finally:
        for n in names:
            podman("rm", "-f", "-t", "0", n)
        subprocess.run(["podman", "rmi", "-f", image], capture_output=True, env=env)


def wait_endpoints(node, want: list[str]) -> list[str]:
    # podman's cleanup DEL runs after the container exits: poll for it
    deadline = time.monotonic() + 20
    while (ips := sorted(e["ip"] for e in node.call("endpoints.list"))) != sorted(want) and time.monotonic() < deadline:
        time.sleep(0.1)
    return ips


def test_podman_container_reaches_a_lab_pod(podman_env):
    node, net, image, podman, names = podman_env
    pod_ns = node.add_pod_netns()
    rc, res = node.cni("ADD", "podmantarget1", pod_ns, args="K8S_POD_NAMESPACE=x;K8S_POD_NAME=target")
    assert rc == 0, res
    target = res["ips"][0]["address"].split("/")[0]
    server = subprocess.Popen(["nsenter", f"--net={pod_ns}", "sh", "-c",
                               "while true; do echo hello-from-pod | busybox nc -l -p 8080; done"],
                              start_new_session=True)
    try:
        wait_listening(pod_ns, 8080)
        p = podman("run", "--rm", *ULIMITS, "--network", net, image, "sh", "-c",
                   f"ip -4 addr show eth0; ping -c 2 -W 2 {target} && nc -w 3 {target} 8080 </dev/null")
        assert p.returncode == 0, p.stdout + p.stderr
        assert "hello-from-pod" in p.stdout
        assert "10.42.7." in p.stdout  # the container got a NovaNet address
        # podman ran ADD and then DEL through the installed binary: only the target pod is left.
        assert wait_endpoints(node, [target]) == [target]
    finally:
        os.killpg(server.pid, 9)


def wait_listening(netns: str, port: int) -> None:
    deadline = time.monotonic() + 20
    while f":{port} " not in subprocess.run(["nsenter", f"--net={netns}", "ss", "-Hltn", f"sport = :{port}"],
                                            capture_output=True, text=True).stdout:
        assert time.monotonic() < deadline, f"nothing listened on {port} in {netns}"
        time.sleep(0.05)


@pytest.fixture
def outside(podman_env):
    """A host outside the node: the node's underlay veth peer moved into a netns of its own."""
    node = podman_env[0]
    name = f"nvt-x{uuid.uuid4().hex[:6]}"
    sh("ip", "netns", "add", name)
    try:
        sh("ip", "-n", node.ns, "link", "set", "eth0p", "netns", name)
        sh("ip", "-n", name, "addr", "add", "172.31.250.2/24", "dev", "eth0p")
        sh("ip", "-n", name, "link", "set", "eth0p", "up")
        sh("nsenter", f"--net=/run/netns/{node.ns}", "sysctl", "-qw", "net.ipv4.ip_forward=1")
        yield f"/run/netns/{name}"
    finally:
        sh("ip", "netns", "del", name, check=False)


def test_published_port_is_reached_on_the_nodes_address(podman_env, outside):
    """``podman run -p``: the portMappings capability reaches portmap, which DNATs the node's port."""
    node, net, image, podman, names = podman_env
    name = f"nvt-pub-{uuid.uuid4().hex[:6]}"
    names.append(name)
    host_port = 18000 + int(uuid.uuid4().hex[:3], 16) % 1000
    p = podman("run", "-d", "--name", name, *ULIMITS, "--network", net, "-p", f"{host_port}:8080", image, "sh", "-c",
               "while true; do echo published-hello | nc -l -p 8080; done")
    assert p.returncode == 0, p.stdout + p.stderr
    eps = [e["ip"] for e in node.call("endpoints.list")]
    assert len(eps) == 1, eps
    ep = eps[0]
    # portmap's rules are in the node's netns, keyed to the container's NovaNet address
    rules = sh("nsenter", f"--net=/run/netns/{node.ns}", "iptables-save", "-t", "nat").stdout
    assert f"--dport {host_port}" in rules and ep in rules, rules
    deadline = time.monotonic() + 20
    while True:
        r = subprocess.run(["nsenter", f"--net={outside}", "nc", "-w", "2", node.node_ip, str(host_port)],
                           input="", capture_output=True, text=True)
        if "published-hello" in r.stdout:
            break
        assert time.monotonic() < deadline, f"node port {host_port} not answering: {r.stdout}{r.stderr}"
        time.sleep(0.2)
    assert podman("rm", "-f", "-t", "0", name).returncode == 0
    assert wait_endpoints(node, []) == []
    # DEL went through the chain backwards: portmap removed its rules for the container.
    assert f"--dport {host_port}" not in sh("nsenter", f"--net=/run/netns/{node.ns}", "iptables-save", "-t", "nat").stdout
