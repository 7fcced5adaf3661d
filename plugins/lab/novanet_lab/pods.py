"""Pod lifecycle in a lab, done as a kubelet + container runtime would.

create: netns -> CNI ADD (inside the node netns) -> record status.podIP/hostIP -> start the pod
server; destroy: stop the server -> CNI DEL with the cached result -> remove the netns.
"""

from __future__ import annotations

import json
import secrets
import sys
import time
from collections.abc import Iterable
from typing import Any

from novanet_lab import cgroups, cni, dns, netns, procs
from novanet_lab.agents import markers
from novanet_lab.daemonset import node as ds_node
from novanet_lab.errors import LabError
from novanet_lab.manifests import ManifestWriter, pod_object
from novanet_lab.paths import LabPaths
from novanet_lab.state import LabState, NodeState, PodState, PortState


def new_pod_state(paths: LabPaths, namespace: str, name: str, node: str, labels: dict[str, str],
                  ports: Iterable[dict[str, Any]], ready: bool = True, server: str = "podserver") -> PodState:
    return PodState(
        ready=ready,
        server=server,
        namespace=namespace,
        name=name,
        node=node,
        netns=paths.pod_netns(namespace, name),
        containerId=cni.container_id(paths.lab, namespace, name, secrets.token_hex(8)),
        labels=dict(labels),
        ports=[PortState(**p) for p in ports],
    )


def schedule(state: LabState, wanted: str | None) -> str:
    """The pod's node: the one asked for, else the node with the fewest pods (ties: spec order)."""
    if wanted is not None:
        return wanted
    counts = {n: 0 for n in state.nodes}
    for p in state.pods.values():
        counts[p.node] = counts.get(p.node, 0) + 1
    return min(counts, key=lambda n: counts[n])


def write_manifest(writer: ManifestWriter, state: LabState, pod: PodState) -> None:
    node = state.nodes[pod.node]
    writer.write(pod_object(pod.namespace, pod.name, pod.node, pod.labels, pod.port_dicts(), pod.ip,
                            node.ip if pod.ip else None, pod.ready, pod.ips or None, node.ips or None))


def conflist(paths: LabPaths, node: str) -> dict[str, Any]:
    try:
        return json.loads(paths.node_conflist(node).read_text())
    except (OSError, ValueError) as e:
        raise LabError(f"node {node}: cannot read {paths.node_conflist(node)}: {e}") from None


def invocation(paths: LabPaths, node: NodeState, pod: PodState) -> cni.CniInvocation:
    inv = cni.CniInvocation(node_netns=node.netns, pod_netns=pod.netns, container_id=pod.containerId,
                            namespace=pod.namespace, pod=pod.name)
    if ds_node.is_daemonset(paths, node.name):
        # The node's runtime: what install-cni put in the node's /opt/cni/bin, run inside the node.
        inv.mount_ns, inv.root, inv.path = ds_node.cni_context(paths, node.name)
    return inv


def attach(paths: LabPaths, state: LabState, pod: PodState) -> None:
    """Make the pod netns and run CNI ADD; fills pod.cniResult, pod.ip and pod.ips."""
    node = state.nodes[pod.node]
    netns.create(pod.netns)
    if ds_node.is_daemonset(paths, node.name):
        ds_node.bind_netns(paths, node.name, pod.netns)
    result = cni.add(invocation(paths, node, pod), conflist(paths, node.name))
    pod.cniResult = result
    pod.ip = cni.pod_ip(result)
    pod.ips = cni.pod_ips(result)


def start_server(paths: LabPaths, pod: PodState) -> None:
    ready = paths.pod_ready(pod.namespace, pod.name)
    if pod.server == "dns":
        ready.unlink(missing_ok=True)
        if not dns.hosts_file(paths).exists():
            dns.hosts_file(paths).parent.mkdir(parents=True, exist_ok=True)
            dns.hosts_file(paths).write_text("")
        pod.serverPid = procs.start_in_netns(dns.argv(paths), pod.netns, paths.pod_log(pod.namespace, pod.name),
                                             paths.pod_pid(pod.namespace, pod.name))
        return
    tcp = [p.port for p in pod.ports if p.protocol == "TCP"]
    udp = [p.port for p in pod.ports if p.protocol == "UDP"]
    ready.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "novanet_lab.podserver", "--name", pod.key, "--ready-file", str(ready)]
    argv += [a for port in tcp for a in ("--tcp", str(port))]
    argv += [a for port in udp for a in ("--udp", str(port))]
    pod.serverPid = procs.start_in_netns(
        argv, pod.netns, paths.pod_log(pod.namespace, pod.name), paths.pod_pid(pod.namespace, pod.name),
        cgroup=cgroups.node_dir(paths.lab, pod.node),
    )


def wait_servers(paths: LabPaths, pods: Iterable[PodState], timeout: float = 20.0) -> None:
    waiting = {p.key: p for p in pods}
    deadline = time.monotonic() + timeout
    while waiting:
        for key, p in list(waiting.items()):
            if p.server == "dns" and procs.is_running(p.serverPid) and dns.listening(p.netns):
                # dnsmasq writes no ready file: the lab writes it once both sockets are bound.
                paths.pod_ready(p.namespace, p.name).write_text(f"{p.serverPid}\n")
            if paths.pod_ready(p.namespace, p.name).exists():
                del waiting[key]
            elif not procs.is_running(p.serverPid):
                procs.reap()
                log = paths.pod_log(p.namespace, p.name)
                raise LabError(f"pod {key}: its server exited; {log}:\n{procs.log_tail(log)}")
        if waiting and time.monotonic() > deadline:
            raise LabError(f"pod servers not listening after {timeout:.0f} s: {', '.join(sorted(waiting))}")
        time.sleep(0.02)


def stop_server(paths: LabPaths, pod: PodState) -> None:
    pid = procs.owned_pid(paths.pod_pid(pod.namespace, pod.name), markers(paths))
    if pid:
        procs.terminate([pid], grace=2.0)
    paths.pod_pid(pod.namespace, pod.name).unlink(missing_ok=True)
    paths.pod_ready(pod.namespace, pod.name).unlink(missing_ok=True)
    pod.serverPid = None


def detach(paths: LabPaths, state: LabState, pod: PodState, timeout: float = 30.0) -> str | None:
    """CNI DEL then remove the netns; returns the DEL error (the netns goes anyway) or None."""
    err = None
    node = state.nodes.get(pod.node)
    if node is not None and netns.exists(pod.netns):
        inv = invocation(paths, node, pod)
        inv.timeout = timeout
        try:
            cni.delete(inv, conflist(paths, node.name), pod.cniResult)
        except LabError as e:
            err = str(e)
    if node is not None and ds_node.is_daemonset(paths, node.name):
        ds_node.unbind_netns(paths, node.name, pod.netns)
    netns.remove(pod.netns)
    return err
