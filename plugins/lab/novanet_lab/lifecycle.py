"""``lab up`` and ``lab down``: build a lab from a spec, and remove everything a lab made.

``down`` works from names, not from memory: it removes every netns called ``<lab>.*``, every
process inside those netns or whose command line names the lab's dirs, the lab's bpffs dir and its
state/run dirs, so it also cleans up after a crash or a partial ``up``. The state file, when it can
be read, only adds the CNI DELs (they need each pod's ADD result).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from novanet_lab import (
    agents,
    cgroups,
    daemonset,
    frr,
    kubeproxy,
    netns,
    outside,
    podroutes,
    pods,
    procs,
    routers,
)
from novanet_lab import state as lstate
from novanet_lab.addressing import assign_node_ips_by_family, carve_pod_cidrs_by_family, underlay_gateways
from novanet_lab.cni import conflist
from novanet_lab.daemonset import node as ds_node
from novanet_lab.errors import LabError
from novanet_lab.manifests import ManifestWriter, namespace_object, node_object
from novanet_lab.nodeconfig import node_config
from novanet_lab.paths import BPFFS, LabPaths, bpf_root, run_root, state_root
from novanet_lab.services import objects as service_objects
from novanet_lab.services import reconcile
from novanet_lab.spec import LabSpec
from novanet_lab.state import LabState, NodeState, UnderlayState

Progress = Callable[[str], None]

# Several pods at once, as a kubelet would; the agents must cope with concurrent CNI ADDs.
CNI_PARALLEL = 4


def _quiet(_: str) -> None:
    pass


@contextmanager
def lab_lock(paths: LabPaths, timeout: float = 120.0) -> Iterator[None]:
    """One mutating command per lab at a time (apply during up would race the manifests)."""
    paths.lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(paths.lock_file, "w") as f:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LabError(f"lab {paths.lab} is busy (another novanet lab command holds {paths.lock_file})") from None
                time.sleep(0.1)
        yield


def ensure_bpffs() -> None:
    if _is_bpffs(BPFFS):
        return
    r = subprocess.run(["mount", "-t", "bpf", "bpf", str(BPFFS)], capture_output=True, text=True)
    if r.returncode != 0:
        raise LabError(f"{BPFFS} is not a bpffs mount and mounting it failed: {r.stderr.strip()}")


def _is_bpffs(path: Path) -> bool:
    try:
        for line in Path("/proc/self/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) > 2 and parts[1] == str(path) and parts[2] == "bpf":
                return True
    except OSError:
        pass
    return False


def leftovers(paths: LabPaths) -> list[str]:
    found = [f"netns {n}" for n in netns.list_netns(paths.netns_prefix)]
    for d in (paths.state_dir, paths.run_dir, paths.bpf_dir):
        if d.exists():
            found.append(str(d))
    if cgroups.cgroup2_mount() and cgroups.lab_dir(paths.lab).exists():
        found.append(str(cgroups.lab_dir(paths.lab)))
    return found


def list_labs() -> list[str]:
    names: set[str] = set()
    for root in (state_root(), run_root(), bpf_root()):
        try:
            names.update(e.name for e in os.scandir(root) if e.is_dir())
        except OSError:
            pass
    for n in netns.list_netns(""):
        lab, sep, rest = n.partition(".")
        if sep and (rest in ("underlay", "outside") or rest.startswith(("node.", "pod."))):
            names.add(lab)
    return sorted(names)


# --------------------------------------------------------------------------- up


def up(spec: LabSpec, spec_file: str | None = None, timeout: float = 180.0, replace: bool = False,
       keep_on_failure: bool = False, progress: Progress = _quiet) -> LabState:
    if os.geteuid() != 0:
        raise LabError("novanet lab up needs root (network namespaces, veths, bpffs)")
    paths = LabPaths(spec.name)
    agents.check_binaries()
    if shutil.which("nsenter") is None:
        raise LabError("nsenter not found in PATH (Debian package util-linux)")
    if replace:
        down(spec.name, progress=progress)
    found = leftovers(paths)
    if found:
        raise LabError(
            f"lab {spec.name} already exists ({', '.join(found[:4])}{'...' if len(found) > 4 else ''}); "
            f"run `novanet lab down --name {spec.name}` first, or use --replace"
        )
    ensure_bpffs()
    with lab_lock(paths):
        try:
            return _up(spec, paths, spec_file, timeout, progress)
        except BaseException as e:
            if keep_on_failure:
                raise
            progress(f"lab up failed, removing what it made (use --keep-on-failure to keep it): {e}")
            try:
                _down(paths, progress=_quiet)
                paths.lock_file.unlink(missing_ok=True)
            except Exception as cleanup:  # the original error matters more; say both
                raise LabError(f"{e}\n(cleanup after the failure also failed: {cleanup})") from None
            raise


def _up(spec: LabSpec, paths: LabPaths, spec_file: str | None, timeout: float, progress: Progress) -> LabState:
    t0 = time.monotonic()
    deadline = t0 + timeout
    st = LabState(name=spec.name, specFile=spec_file, spec=spec.model_dump(mode="json"))
    for d in (paths.state_dir, paths.run_dir, paths.manifest_dir, paths.pods_run_dir):
        d.mkdir(parents=True, exist_ok=True)
    lstate.save(paths, st)

    assert spec.underlay.cidr is not None and spec.outside.address is not None
    node_specs = [(n.name, n.podCIDR) for n in spec.nodes]
    cidrs = carve_pod_cidrs_by_family(spec.cluster.clusterCIDR, spec.cluster.masks(), node_specs)
    all_ips = assign_node_ips_by_family(spec.underlay.cidr, [(n.name, n.ip) for n in spec.nodes])
    ips = {n: v[0] for n, v in all_ips.items()}  # the primary family's: what routers, FRR, daemonsets use
    gws = underlay_gateways(spec.underlay.cidr)
    gw = gws[0]

    # Configs first: a config error must stop us before any netns exists.
    configs = {n.name: node_config(spec, paths, n.name, ",".join(all_ips[n.name]), ",".join(cidrs[n.name]))
               for n in spec.nodes}
    with_frr = podroutes.uses_frr(spec)  # other routing backends get no FRR and no routers
    router_ips: dict[str, str] = {}
    if with_frr:
        router_ips = routers.router_ips(spec, ips, gw)
        configs = {n: routers.node_config(spec, paths, n, cfg, router_ips) for n, cfg in configs.items()}
    # daemonset: the nodes' NovaNet (and FRR) come from the chart's pod; the lab only runs routers.
    prep = daemonset.prepare(spec, paths, spec_file, ips, router_ips) if spec.daemonset else None
    if prep is not None:
        configs = {n: prep.node_config(n, ips[n]) for n in configs}
    lab_frr = with_frr and prep is None
    if lab_frr or spec.routers:
        frr.check_installed()

    cgroups.create(spec.name, [n.name for n in spec.nodes])
    progress(f"underlay {paths.underlay_netns} ({spec.underlay.cidr}, bridge {', '.join(gws)})")
    st.underlay = UnderlayState(netns=paths.underlay_netns, cidr=spec.underlay.cidr, gateway=gw, mtu=spec.underlay.mtu,
                                gateways=gws)
    netns.build_underlay(paths.underlay_netns, netns.on_underlay(gws, spec.underlay.cidrs), spec.underlay.mtu)
    _build_nodes(spec, paths, st, all_ips, cidrs, configs, write_conflist=prep is None, progress=progress)
    if spec.outside.enabled:
        used = {*gws, *(a for v in all_ips.values() for a in v), *router_ips.values()}
        st.outside = outside.build(paths, spec, used, progress)
        for node in st.nodes.values():
            for gateway in st.outside.ips or [st.outside.ip]:
                netns.default_route(node.netns, gateway)
        lstate.save(paths, st)
    if with_frr:
        plen = netns.prefixlen(routers.underlay_v4(spec)) if spec.routers else 0  # no router to cable
        _start_frr(spec, paths, st, ips, router_ips, plen, on_nodes=lab_frr, progress=progress)

    writer = _write_manifests(spec, paths, st)
    lstate.save(paths, st)

    _start_node_daemons(spec, paths, st, prep, with_frr, t0, deadline, progress)

    if st.outside is not None:
        outside.wait_ready(paths, st.outside, max(5.0, deadline - time.monotonic()))
    create_pods(paths, st, writer, list(st.pods.values()), deadline, progress)
    reconcile.settle(paths, st, writer, deadline)
    if st.services or kubeproxy.mode_of(st) != "none":
        progress(f"services: {len(st.services)}, kube-proxy rules: {kubeproxy.mode_of(st)}")
    st.phase = "up"
    lstate.save(paths, st)
    progress(f"lab {spec.name} is up ({time.monotonic() - t0:.1f} s)")
    return st


def _build_nodes(spec: LabSpec, paths: LabPaths, st: LabState, ips: dict[str, list[str]],
                 cidrs: dict[str, list[str]], configs: dict[str, Any], write_conflist: bool,
                 progress: Progress) -> None:
    """Each node's netns on the underlay, its directories, config and (unless a daemonset's
    install-cni init container writes it) its CNI conflist."""
    assert spec.underlay.cidr is not None
    v6 = 6 in spec.cluster.families or 6 in spec.underlay.families
    for i, n in enumerate(spec.nodes):
        node = NodeState(name=n.name, netns=paths.node_netns(n.name), ip=ips[n.name][0], podCIDR=cidrs[n.name][0],
                         config=str(paths.node_config(n.name)), ips=ips[n.name], podCIDRs=cidrs[n.name])
        st.nodes[n.name] = node
        lstate.save(paths, st)
        progress(f"node {n.name}: netns {node.netns}, {', '.join(node.ips)}, podCIDR {', '.join(node.podCIDRs)}")
        netns.create(node.netns)
        netns.attach_node(paths.underlay_netns, i, node.netns, netns.on_underlay(node.ips, spec.underlay.cidrs),
                          spec.underlay.mtu)
        # Kubernetes nodes forward (kubelet requires it); the agent may rely on it for pod routing.
        netns.set_sysctl(node.netns, "net.ipv4.ip_forward", "1")
        if v6:
            netns.set_sysctl(node.netns, "net.ipv6.conf.all.forwarding", "1")
        kubeproxy.setup_node(st, n.name)
        for d in (paths.node_dir(n.name), paths.node_ipam_dir(n.name), paths.node_run_dir(n.name),
                  paths.node_bpf_root(n.name), paths.node_conflist(n.name).parent):
            d.mkdir(parents=True, exist_ok=True)
        paths.node_config(n.name).write_text(yaml.safe_dump(configs[n.name], sort_keys=False))
        if write_conflist:  # a daemonset node's conflist is what its install-cni init container writes
            paths.node_conflist(n.name).write_text(json.dumps(conflist(str(paths.socket(n.name, "cni"))), indent=2) + "\n")


def _start_frr(spec: LabSpec, paths: LabPaths, st: LabState, ips: dict[str, str], router_ips: dict[str, str],
               plen: int, on_nodes: bool, progress: Progress) -> None:
    """FRR on the nodes (unless a daemonset pod brings its own) and the spec's routers."""
    if on_nodes:
        for node in st.nodes.values():
            progress(f"node {node.name}: starting FRR (zebra, bgpd, bfdd; vtysh -N {frr.pathspace(paths, node.name)})")
            frr.start(paths, node.name, node.netns, {})
    routers.build(spec, paths, ips, router_ips, plen, progress)


def _write_manifests(spec: LabSpec, paths: LabPaths, st: LabState) -> ManifestWriter:
    """The spec's Nodes, Namespaces, Pods and Services as manifests for the agents' state source."""
    writer = ManifestWriter(paths.manifest_dir)
    writer.ensure()
    for node in st.nodes.values():
        writer.write(node_object(node.name, node.ips or [node.ip], node.podCIDRs or [node.podCIDR]))
    namespaces = {ns.name: dict(ns.labels) for ns in spec.namespaces}
    if any(p.namespace == "default" for p in spec.pods):
        namespaces.setdefault("default", {})
    for name, labels in namespaces.items():
        writer.write(namespace_object(name, labels))
    st.namespaces = namespaces
    for p in spec.pods:
        ps = pods.new_pod_state(paths, p.namespace, p.name, pods.schedule(st, p.node), p.labels,
                                [port.model_dump() for port in p.ports], p.ready, p.server)
        st.pods[ps.key] = ps
        pods.write_manifest(writer, st, ps)
    alloc = service_objects.Allocator(spec.cluster.serviceCIDR, [])
    for s in sorted(spec.services, key=lambda s: s.clusterIP is None):  # picked addresses before allocated ones
        st.services[s.key] = service_objects.admit(s.to_object(), None, alloc)
        writer.write(st.services[s.key])
    st.manifestVersion = writer.bump()
    return writer


def _start_node_daemons(spec: LabSpec, paths: LabPaths, st: LabState, prep: Any, with_frr: bool, t0: float,
                        deadline: float, progress: Progress) -> None:
    """Every node's dataplane, then agent (or the daemonset pods), ready; in native routing, until
    every node routes every other node's PodCIDR."""
    if prep is not None:
        daemonset.start(paths, prep, [(n.name, n.ip) for n in st.nodes.values()], progress)
    else:
        for node in st.nodes.values():
            progress(f"node {node.name}: starting novanet-dataplane")
            node.dataplanePid = agents.start(paths, node, "dataplane")
        lstate.save(paths, st)
        for node in st.nodes.values():
            agents.wait_socket(paths, node, "dataplane", max(1.0, deadline - time.monotonic()))
            progress(f"node {node.name}: starting novanet-agent")
            node.agentPid = agents.start(paths, node, "agent")
    lstate.save(paths, st)
    agents.wait_ready(paths, st.nodes.values(), st.manifestVersion, max(1.0, deadline - time.monotonic()))
    progress(f"agents ready ({time.monotonic() - t0:.1f} s)")
    if spec.cluster.routingMode == "native":
        pod_cidrs = {n.name: (n.netns, n.podCIDRs or [n.podCIDR]) for n in st.nodes.values()}
        if with_frr:
            frr.wait_converged(pod_cidrs, max(5.0, deadline - time.monotonic()))
        else:
            podroutes.wait_routed(pod_cidrs, max(5.0, deadline - time.monotonic()))
        progress(f"{'BGP' if with_frr else podroutes.routing_type(spec)} converged: every node routes every "
                 f"other PodCIDR ({time.monotonic() - t0:.1f} s)")


def create_pods(paths: LabPaths, st: LabState, writer: ManifestWriter, new: list[Any], deadline: float,
                progress: Progress) -> None:
    """CNI ADD + pod servers for pods whose manifests the agents already have."""
    if not new:
        return

    def one(p: Any) -> None:
        pods.attach(paths, st, p)
        progress(f"pod {p.key}: {p.ip} on {p.node}")

    with ThreadPoolExecutor(max_workers=CNI_PARALLEL) as pool:
        futures = [pool.submit(one, p) for p in new]
        errors = []
        for f in futures:
            try:
                f.result()
            except LabError as e:
                errors.append(str(e))
    lstate.save(paths, st)
    if errors:
        raise LabError("\n".join(errors))
    for p in new:
        pods.write_manifest(writer, st, p)
        pods.start_server(paths, p)
    st.manifestVersion = writer.bump()
    lstate.save(paths, st)
    pods.wait_servers(paths, new, timeout=max(5.0, deadline - time.monotonic()))
    agents.wait_ready(paths, st.nodes.values(), st.manifestVersion, max(5.0, deadline - time.monotonic()))


# --------------------------------------------------------------------------- down


def down(lab: str, progress: Progress = _quiet, grace: float = 5.0) -> dict[str, Any]:
    if os.geteuid() != 0:
        raise LabError("novanet lab down needs root")
    paths = LabPaths(lab)
    with lab_lock(paths, timeout=30.0):
        report = _down(paths, progress, grace)
    try:
        paths.lock_file.unlink()
    except FileNotFoundError:
        pass
    for root in (state_root(), run_root(), bpf_root()):
        try:
            root.rmdir()  # only when no other lab is left
        except OSError:
            pass
    return report


def _down(paths: LabPaths, progress: Progress = _quiet, grace: float = 5.0) -> dict[str, Any]:
    report: dict[str, Any] = {"name": paths.lab, "cniDel": [], "cniDelErrors": [], "processes": [],
                              "netns": [], "bpfPins": 0, "dirs": []}
    st = lstate.load(paths)
    if st is not None:
        for p in st.pods.values():
            pods.stop_server(paths, p)
        for p in list(st.pods.values()):
            if p.cniResult is None or not netns.exists(p.netns):
                continue
            if agents.running_pid(paths, p.node, "agent") is None:
                report["cniDelErrors"].append(f"{p.key}: agent on {p.node} is not running, DEL skipped")
                continue
            err = pods.detach(paths, st, p, timeout=15.0)
            report["netns"].append(p.netns)
            if err:
                report["cniDelErrors"].append(err)
            else:
                report["cniDel"].append(p.key)
    for node_name in _daemonset_nodes(paths):
        report["cniDelErrors"] += ds_node.remove_containers(paths, node_name)
    names = netns.list_netns(paths.netns_prefix)
    pids = procs.find_lab_processes(names, agents.markers(paths))
    if pids:
        progress(f"stopping {len(pids)} processes")
        hard = procs.terminate(pids, grace)
        report["processes"] = sorted(pids)
        report["killed"] = sorted(hard)
    for n in netns.list_netns(paths.netns_prefix):
        netns.remove(n)
        report["netns"].append(n)
    report["frrLinks"] = frr.cleanup(paths)
    report["cgroups"] = cgroups.remove(paths.lab)
    if paths.bpf_dir.exists():
        report["bpfPins"] = _remove_tree(paths.bpf_dir)
        report["dirs"].append(str(paths.bpf_dir))
    for d in (paths.run_dir, paths.state_dir):
        if d.exists():
            shutil.rmtree(d, ignore_errors=True)
            report["dirs"].append(str(d))
    left = leftovers(paths)
    if left:
        raise LabError(f"lab {paths.lab}: could not remove {', '.join(left)}")
    progress(f"lab {paths.lab} removed: {len(report['netns'])} netns, {len(report['processes'])} processes, "
             f"{report['bpfPins']} bpffs pins")
    return report


def _daemonset_nodes(paths: LabPaths) -> list[str]:
    """Nodes that run the DaemonSet pod, found by their dirs (works without the state file)."""
    try:
        return sorted(e.name for e in os.scandir(paths.state_dir) if ds_node.is_daemonset(paths, e.name))
    except OSError:
        return []


def _remove_tree(root: Path) -> int:
    """Remove a bpffs tree (pins are files: unlink; dirs: rmdir bottom-up); returns pins removed."""
    count = 0
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for f in filenames:
            try:
                os.unlink(os.path.join(dirpath, f))
                count += 1
            except FileNotFoundError:
                pass
        for d in dirnames:
            try:
                os.rmdir(os.path.join(dirpath, d))
            except FileNotFoundError:
                pass
    try:
        os.rmdir(root)
    except FileNotFoundError:
        pass
    return count
