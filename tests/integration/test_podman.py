"""A real CNI client: podman 4.3 (CNI backend, runc) runs a busybox container on NovaNet's conflist,
and the container reaches a pod created on the same node."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import time
import uuid

import pytest

from novanet_core.cni.install import conflist, install

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.podman, pytest.mark.slow]


@pytest.fixture
def podman_env(tmp_path, kernel_node):
    if not shutil.which("podman") or not shutil.which("runc") or not os.path.exists("/bin/busybox"):
        pytest.fail("podman, runc and busybox-static are required (contrib/install-deps.sh installs them)")
    tag = uuid.uuid4().hex[:6]
    net = f"novanet-t{tag}"
    bindir, netdir = tmp_path / "bin", tmp_path / "net.d"
    install(str(bindir), None)
    netdir.mkdir()
    cl = conflist(kernel_node.config["sockets"]["cni"], cni_version="1.0.0")
    cl["name"] = net
    cl["plugins"].insert(0, {"type": "loopback"})  # podman expects lo up; the reference plugin does it
    (netdir / f"10-{net}.conflist").write_text(json.dumps(cl))
    conf = tmp_path / "containers.conf"
    conf.write_text(
        '[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\nruntime = "runc"\n'
        f'[network]\nnetwork_backend = "cni"\ncni_plugin_dirs = ["{bindir}", "/usr/lib/cni"]\n'
        f'network_config_dir = "{netdir}"\n')
    env = {**os.environ, "CONTAINERS_CONF": str(conf)}
    rootfs = tmp_path / "rootfs"
    for d in ("bin", "etc", "proc", "sys", "dev", "tmp"):
        (rootfs / d).mkdir(parents=True)
    shutil.copy("/bin/busybox", rootfs / "bin" / "busybox")
    for a in ("sh", "ip", "ping", "wget", "nc", "cat", "sleep"):
        os.symlink("busybox", rootfs / "bin" / a)
    image = f"localhost/novanet-test-busybox:{tag}"
    tar = tmp_path / "rootfs.tar"
    with tarfile.open(tar, "w") as t:
        t.add(rootfs, arcname=".")
    subprocess.run(["podman", "import", str(tar), image], check=True, capture_output=True, env=env)
    try:
        yield kernel_node, net, image, env
    finally:
        subprocess.run(["podman", "rm", "-af"], capture_output=True, env=env)
        subprocess.run(["podman", "rmi", "-f", image], capture_output=True, env=env)


def test_podman_container_reaches_a_lab_pod(podman_env):
    node, net, image, env = podman_env
    pod_ns = node.add_pod_netns()
    rc, res = node.cni("ADD", "podmantarget1", pod_ns, args="K8S_POD_NAMESPACE=x;K8S_POD_NAME=target")
    assert rc == 0, res
    target = res["ips"][0]["address"].split("/")[0]
    server = subprocess.Popen(["nsenter", f"--net={pod_ns}", "sh", "-c",
                               "while true; do echo hello-from-pod | busybox nc -l -p 8080; done"],
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while ":8080 " not in subprocess.run(["nsenter", f"--net={pod_ns}", "ss", "-Hltn", "sport = :8080"],
                                             capture_output=True, text=True).stdout:
            assert time.monotonic() < deadline, "the pod's nc server never listened"
            time.sleep(0.05)
        p = subprocess.run(
            ["podman", "run", "--rm", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096",
             "--network", net, image, "sh", "-c",
             f"ip -4 addr show eth0; ping -c 2 -W 2 {target} && nc -w 3 {target} 8080 </dev/null"],
            capture_output=True, text=True, env=env, timeout=120)
        assert p.returncode == 0, p.stdout + p.stderr
        assert "hello-from-pod" in p.stdout
        assert "10.42.7." in p.stdout  # the container got a NovaNet address
        # podman ran ADD and then DEL through our binary: the agent has only the target pod left.
        # (polled: the DEL comes from podman's container cleanup, which may still be running)
        deadline = time.monotonic() + 20
        while (ips := [e["ip"] for e in node.call("endpoints.list")]) != [target] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ips == [target]
    finally:
        os.killpg(server.pid, 9)
