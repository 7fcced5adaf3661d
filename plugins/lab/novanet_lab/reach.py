"""``lab probe``: pick sources, targets and port/protocol checks from a lab's state, run the probes.

In a dual-stack lab every pod has an address per family; each family is probed as a matrix of its
own (targets at their address of that family), IPv4 first, and each result names its family.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from novanet_core import ipfamily
from novanet_core.protocols import L4_PROTOCOLS
from novanet_lab import cgroups
from novanet_lab import state as lstate
from novanet_lab.errors import LabError
from novanet_lab.paths import LabPaths
from novanet_lab.probe import CONFIRM_TIMEOUT, DEFAULT_TIMEOUT, Endpoint, ProbeResult, probe_matrix
from novanet_lab.state import LabState, PodState

PROBE_PROTOCOLS = L4_PROTOCOLS
DEFAULT_PROTOCOLS = ("TCP", "UDP")  # SCTP only when asked: crafted INIT chunks (novanet_lab.sctp)
FAMILY_CHOICES = ("4", "6", "all")


def pod_ips(p: PodState) -> list[str]:
    return p.ips or ([p.ip] if p.ip else [])


def lab_families(st: LabState) -> list[int]:
    """The families the lab's pods have addresses in (from the spec's clusterCIDR when no pod has one)."""
    fams = {ipfamily.family_of(ip) for p in st.pods.values() for ip in pod_ips(p)}
    if not fams:
        fams = set(ipfamily.families(ipfamily.split(str(st.spec.get("cluster", {}).get("clusterCIDR", "")))))
    return sorted(fams) or [4]


def families_for(st: LabState, family: str) -> list[int]:
    """``--family 4|6|all`` in this lab: ``all`` is every family its pods have, IPv4 first."""
    have = lab_families(st)
    if family == "all":
        return have
    if family not in FAMILY_CHOICES:
        raise LabError(f"--family {family}: must be one of {', '.join(FAMILY_CHOICES)}")
    if int(family) not in have:
        raise LabError(f"--family {family}: the pods of lab {st.name} have no IPv{family} addresses "
                       f"(clusterCIDR {st.spec.get('cluster', {}).get('clusterCIDR', '?')})")
    return [int(family)]


def _select(st: LabState, wanted: Sequence[str], flag: str, family: int = 4) -> list[Endpoint]:
    """Pods named ``ns/pod`` or whole namespaces ``ns``; all pods when nothing is asked for."""
    pods = sorted(st.pods.values(), key=lambda p: (p.namespace, p.name))
    if wanted:
        chosen = []
        for w in wanted:
            if "/" in w:
                match = [p for p in pods if p.key == w]
            else:
                match = [p for p in pods if p.namespace == w]
            if not match:
                raise LabError(f"{flag} {w}: no such pod or namespace in lab {st.name} "
                               f"(pods: {', '.join(p.key for p in pods) or 'none'})")
            chosen.extend(m for m in match if m not in chosen)
        pods = chosen
    out = []
    for p in pods:
        if p.ip is None:
            raise LabError(f"{flag}: pod {p.key} has no IP (its CNI ADD did not finish)")
        ip = ipfamily.pick(pod_ips(p), family)
        if ip is None:
            raise LabError(f"{flag}: pod {p.key} has no IPv{family} address ({', '.join(pod_ips(p))})")
        out.append(Endpoint(p.key, ip, p.netns,
                            cgroup=str(cgroups.node_dir(st.name, p.node)) if p.node else ""))
    return out


def checks_for(st: LabState, targets: Sequence[Endpoint], ports: Sequence[int],
               protocols: Sequence[str]) -> list[tuple[int, str]]:
    """Explicit --port values, else every port a target declares; each for the chosen protocols."""
    protos = [p.upper() for p in protocols] or list(DEFAULT_PROTOCOLS)
    for p in protos:
        if p not in PROBE_PROTOCOLS:
            raise LabError(f"--protocol {p}: must be one of {', '.join(PROBE_PROTOCOLS)}")
    if ports:
        return [(port, proto) for port in ports for proto in protos]
    keys = {t.key for t in targets}
    declared = sorted({(x.port, x.protocol) for p in st.pods.values() if p.key in keys for x in p.ports})
    checks = [(port, proto) for port, proto in declared if proto in protos]
    if not checks:
        raise LabError("nothing to probe: the target pods declare no TCP/UDP ports (give --port)")
    return checks


def _hosts(st: LabState, paths: LabPaths, from_nodes: Sequence[str], from_underlay: bool,
           family: int = 4) -> list[Endpoint]:
    """Host-network sources: a node's netns (``node:<name>``), the underlay outside every node.
    Their address is only a label (a source's sockets are not bound to it)."""
    out = []
    for n in from_nodes:
        if n not in st.nodes:
            raise LabError(f"--from-node {n}: not a node of lab {st.name} ({', '.join(st.nodes)})")
        # a host process of that node: its node's cgroup, where the socket-level Service programs
        # are attached (without it a ClusterIP is unreachable under kubeProxyReplacement)
        node = st.nodes[n]
        out.append(Endpoint(f"node:{n}", ipfamily.pick(node.ips, family) or node.ip, node.netns,
                            cgroup=str(cgroups.node_dir(st.name, n))))
    if from_underlay:
        if st.underlay is None:
            raise LabError(f"lab {st.name} has no underlay")
        out.append(Endpoint("underlay", ipfamily.pick(st.underlay.gateways, family) or st.underlay.gateway,
                            st.underlay.netns))
    return out


def service_targets(st: LabState, paths: LabPaths, names: Sequence[str], node_port: str | None = None,
                    family: int = 4) -> tuple[list[Endpoint], dict[str, set[tuple[int, str]]]]:
    """``svc:NS/NAME`` targets at the ClusterIP of ``family`` (or ``node_port``'s IP of that
    family and the nodePorts), each accepting a reply from any pod that is one of its endpoints;
    and the ports each serves. A Service without a ClusterIP of the family is left out."""
    from novanet_lab.status import services_status

    found = {f"{s['namespace']}/{s['name']}": s for s in services_status(paths)}
    if node_port is not None and node_port not in st.nodes:
        raise LabError(f"--node-port {node_port}: not a node of lab {st.name} ({', '.join(st.nodes)})")
    targets, serves = [], {}
    for name in names:
        s = found.get(name)
        if s is None:
            raise LabError(f"--to-service {name}: no such Service in lab {st.name} "
                           f"(services: {', '.join(found) or 'none'})")
        if s["headless"] or not s["clusterIP"]:
            raise LabError(f"--to-service {name}: has no ClusterIP (headless or ExternalName): probe its pods")
        cip = ipfamily.pick(s.get("clusterIPs") or [s["clusterIP"]], family)
        if cip is None:
            continue
        key = f"svc:{name}"
        accepts = frozenset(e["pod"] for e in s["endpoints"] if e["pod"])
        if node_port is not None:
            ports = {(p["nodePort"], p["protocol"]) for p in s["ports"] if p["nodePort"]}
            if not ports:
                raise LabError(f"--node-port: Service {name} has no nodePort (type {s['type']})")
            node_ip = ipfamily.pick(st.nodes[node_port].ips or [st.nodes[node_port].ip], family)
            if node_ip is None:
                continue
            targets.append(Endpoint(key, node_ip, "", accepts))
        else:
            ports = {(p["port"], p["protocol"]) for p in s["ports"]}
            targets.append(Endpoint(key, cip, "", accepts))
        serves[key] = ports
    return targets, serves


def probe(lab: str, sources: Sequence[str] = (), targets: Sequence[str] = (), ports: Sequence[int] = (),
          protocols: Sequence[str] = (), timeout: float = DEFAULT_TIMEOUT,
          confirm_timeout: float = CONFIRM_TIMEOUT, services: Sequence[str] = (), node_port: str | None = None,
          from_nodes: Sequence[str] = (), from_underlay: bool = False, family: str = "all") -> list[ProbeResult]:
    """Probe pods (``targets``, all by default) and/or Services (``services``) from pods
    (``sources``, all by default) and/or host-network sources, per family (``family``: 4, 6 or
    all the lab's pods have); each family's results in turn, IPv4 first, Service results last."""
    paths = LabPaths(lab)
    st = lstate.load(paths)
    if st is None:
        raise LabError(f"lab {lab} is not up (no {paths.state_file})")
    fams = families_for(st, family)
    if node_port is not None and not services:
        raise LabError("--node-port needs --to-service")
    for port in ports:
        if not 1 <= port <= 65535:
            raise LabError(f"--port {port}: not a port number 1..65535")
    results: list[ProbeResult] = []
    for fam in fams:
        hosts = _hosts(st, paths, from_nodes, from_underlay, fam)
        src = (_select(st, sources, "--from", fam) if sources or not hosts else []) + hosts
        if targets or not services:
            dst = _select(st, targets, "--to", fam)
            if not src or not dst:
                raise LabError(f"lab {lab} has no pods to probe")
            results += [dataclasses.replace(r, family=fam)
                        for r in _probe_pods(st, src, dst, ports, protocols, timeout, confirm_timeout)]
    if services:
        if any(proto.upper() == "SCTP" for proto in protocols):
            raise LabError("--to-service: SCTP is not probed (this kernel has no SCTP sockets)")
        probed = False
        for fam in fams:  # each family a Service has a ClusterIP of, at that address
            svc_dst, svc_serves = service_targets(st, paths, services, node_port, fam)
            if not svc_dst:
                continue
            hosts = _hosts(st, paths, from_nodes, from_underlay, fam)
            src = (_select(st, sources, "--from", fam) if sources or not hosts else []) + hosts
            if not src:
                raise LabError(f"lab {lab} has no pods to probe from")
            protos = [p.upper() for p in protocols] or list(DEFAULT_PROTOCOLS)
            if ports:
                checks = [(port, proto) for port in ports for proto in protos]
            else:
                checks = sorted({c for cs in svc_serves.values() for c in cs if c[1] in protos})
            results += [dataclasses.replace(r, family=fam) for r in
                        probe_matrix(src, svc_dst, checks, timeout, None if ports else svc_serves, confirm_timeout)]
            probed = True
        if not probed:
            where = f"node {node_port} has" if node_port is not None else "the Services have"
            raise LabError(f"--to-service {', '.join(services)}: {where} no address of "
                           f"{' or '.join(f'IPv{f}' for f in fams)}")
    return results


def _probe_pods(st: LabState, src: list[Endpoint], dst: list[Endpoint], ports: Sequence[int],
                protocols: Sequence[str], timeout: float, confirm_timeout: float) -> list[ProbeResult]:
    # Without --port, each target is probed on the ports it declares only (nothing listens elsewhere).
    serves = None if ports else {p.key: {(x.port, x.protocol) for x in p.ports} for p in st.pods.values()}
    checks = checks_for(st, dst, ports, protocols)
    sctp_ports = [port for port, proto in checks if proto == "SCTP"]
    if not sctp_ports:
        return probe_matrix(src, dst, checks, timeout, serves, confirm_timeout)
    from novanet_lab.sctp import probe_sctp

    other = [c for c in checks if c[1] != "SCTP"]
    res = probe_matrix(src, dst, other, timeout, serves, confirm_timeout) if other else []
    res += probe_sctp(src, dst, sctp_ports, timeout, confirm_timeout)
    order = {c: i for i, c in enumerate(checks)}
    return sorted(res, key=lambda r: (src.index(next(s for s in src if s.key == r.src)), order[(r.port, r.protocol)]))
