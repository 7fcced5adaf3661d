"""The upstream netpol e2e cases (tests/netpol_cases) with real packets over both families, on one
node with dual-stack pods, through the ebpf datapath: the model and its replay, for
tests/bpf/test_netpol_dual_stack.py (every case, long form) and tests/bpf/test_ipv6.py (a short form
on that module's topology).

The model's nine pods (x, y, z × a, b, c) each have an IPv4 and an IPv6 address and one identity.
Each step of a case goes through a PolicyEngine as the agent's does (policies, namespace and pod
label changes; a relabelled pod's new identity is written to its endpoint entries first), and
each compiled endpoint is sent for both of its addresses through the wire form the dataplane
decodes. Then every probe of the case runs once per family over all 9×9 pairs (the diagonal
skipped, as upstream does), compared cell by cell with upstream's truth table. A case is run per
family the way upstream runs it in an IPv4 and in an IPv6 cluster: its IP-dependent CIDRs are
filled with the pods' addresses of the family probed.

SCTP cases are not probed here: this kernel has no SCTP sockets, and the pods here run plain
socket servers; the lab's raw-socket SCTP prober (novanet_lab.sctp) probes them per family in
tests/conformance/test_netpol_families.py.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from novanet_lab.probe import Endpoint as ProbeEp
from novanet_lab.probe import probe_matrix

from novanet_core.policy import PolicyEngine
from novanet_core.policy.wire import decode_update, encode_endpoint, encode_update
from novanet_core.state.model import ClusterState, Namespace, NetworkPolicy, Pod, parse_object, parse_ports
from tests import netpol_cases as nc
from tests.bpf.topo6 import DualStackTopology, Pod6

PORTS = nc.container_ports(["TCP", "UDP", "SCTP"], [80, 81])
CASES = [c for c in nc.load_cases() if "SCTP" not in c.protocols]
SHORT = (8, 36)  # a namespaceSelector; an ipBlock with an except holding the pod's own address

# One socket per port and protocol for both families (IPv4 as mapped addresses); the reply names
# the pod, as the lab's pod server does, so a probe landing elsewhere does not count.
_SERVER = r"""
import selectors, socket, sys
name, ready = sys.argv[1], sys.argv[2]
sel = selectors.DefaultSelector()
for port in (80, 81):
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        s = socket.socket(socket.AF_INET6, kind)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("::", port))
        if kind == socket.SOCK_STREAM:
            s.listen(256)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, kind)
open(ready, "w").close()
reply = (name + "\n").encode()
while True:
    for key, _ in sel.select():
        s = key.fileobj
        try:
            if key.data == socket.SOCK_STREAM:
                c, _ = s.accept(); c.send(reply); c.close()
            else:
                _, peer = s.recvfrom(2048); s.sendto(reply, peer)
        except OSError:
            pass
"""


class VpTopology(DualStackTopology):
    prefix = "vp6c"


def run_case(model: Model, case: nc.NetpolCase) -> None:
    failures = replay(model, case, 6) + replay(model, case, 4)
    assert not failures, f"case {case.id} ({case.name}): " + "; ".join(failures)


class Model:
    """The model's pods on the topology, a PolicyEngine over them, and their servers."""

    def __init__(self, topo: VpTopology, dp: Any):
        self.topo, self.dp = topo, dp
        self.pods: dict[str, Pod6] = {}
        for i, key in enumerate(nc.PODS):
            p = topo.pods[chr(ord("a") + i)]
            assert isinstance(p, Pod6)
            self.pods[key] = p
        self.ports = parse_ports("Pod", "p", "ports", PORTS)
        state = ClusterState()
        for ns in nc.NAMESPACES:
            state.namespaces[ns] = Namespace(ns, nc.namespace_labels(ns))
        for key in nc.PODS:
            state.pods[key] = self._pod(key, nc.pod_labels(key.split("/")[1]))
        self.engine = PolicyEngine(node="n1")
        self.engine.load(state)
        self.policies: set[str] = set()
        self.labels = {k: nc.pod_labels(k.split("/")[1]) for k in nc.PODS}
        self.ns_labels = {ns: nc.namespace_labels(ns) for ns in nc.NAMESPACES}
        self._identities()
        self.push(self.engine.endpoints, full=True)
        self.servers: list[Any] = []
        self._start_servers()

    def _pod(self, key: str, labels: dict[str, str]) -> Pod:
        ns, name = key.split("/")
        p = self.pods[key]
        return Pod(ns, name, labels, node="n1", ip=p.ip, ips=(p.ip, p.ip6), ports=self.ports)

    def _start_servers(self) -> None:
        ready_dir = Path(tempfile.mkdtemp(prefix="vp6c-ready-"))
        try:
            for key, p in self.pods.items():
                self.servers.append(p.popen(sys.executable, "-c", _SERVER, key, str(ready_dir / p.name)))
            deadline = time.monotonic() + 30
            while not all((ready_dir / p.name).exists() for p in self.pods.values()):
                assert all(s.poll() is None for s in self.servers), "a pod server exited at start"
                assert time.monotonic() < deadline, "pod servers never became ready"
                time.sleep(0.02)
        except BaseException:
            self.close()
            raise
        finally:
            shutil.rmtree(ready_dir, ignore_errors=True)

    def close(self) -> None:
        for s in self.servers:
            s.terminate()
            s.wait(timeout=5)

    def _identities(self) -> None:
        """As the agent does on a relabel: the endpoint entries (both addresses) carry the new identity."""
        for key, p in self.pods.items():
            ident = self.engine.identity_of(key) or 0
            if ident != p.identity:
                p.identity = ident
                self.dp.upsert_endpoint(p.endpoint(self.topo.gateway))

    def push(self, delta: dict[str, Any], full: bool = False) -> None:
        self._identities()
        ups = [encode_endpoint(ep, ip) for k, ep in delta.items() if ep is not None
               for ip in (self.pods[k].ip, self.pods[k].ip6)]
        u = decode_update(encode_update(ups, [], full))
        self.dp.apply_policy(u.upserts, u.deletes, u.full)

    def run(self, actions: list[dict[str, Any]]) -> None:
        for action in actions:
            ((kind, arg),) = action.items()
            if kind in ("create_policy", "update_policy"):
                obj = parse_object(arg)
                assert isinstance(obj, NetworkPolicy)
                self.policies.add(obj.key)
                self.push(self.engine.upsert_policy(obj))
            elif kind == "delete_all_policies":
                self.delete_policies()
            elif kind == "add_namespace_labels":
                ns = arg["namespace"]
                self.ns_labels[ns] = {**self.ns_labels[ns], **arg["labels"]}
                self.push(self.engine.upsert_namespace(Namespace(ns, self.ns_labels[ns])))
            elif kind == "add_pod_labels":
                key = arg["pod"]
                self.labels[key] = {**self.labels[key], **arg["labels"]}
                self.push(self.engine.upsert_pod(self._pod(key, self.labels[key])))
            else:
                raise AssertionError(f"unknown action {kind}")

    def delete_policies(self) -> None:
        for key in sorted(self.policies):
            self.push(self.engine.delete_policy(key))
        self.policies.clear()

    def reset(self) -> None:
        self.delete_policies()
        for ns in nc.NAMESPACES:
            if self.ns_labels[ns] != nc.namespace_labels(ns):
                self.ns_labels[ns] = nc.namespace_labels(ns)
                self.push(self.engine.upsert_namespace(Namespace(ns, self.ns_labels[ns])))
        for key in nc.PODS:
            if self.labels[key] != nc.pod_labels(key.split("/")[1]):
                self.labels[key] = nc.pod_labels(key.split("/")[1])
                self.push(self.engine.upsert_pod(self._pod(key, self.labels[key])))

    def addresses(self, family: int) -> dict[str, str]:
        return {k: (p.ip6 if family == 6 else p.ip) for k, p in self.pods.items()}

    def probe(self, family: int, protocol: str, port: int) -> dict[tuple[str, str], tuple[bool, str]]:
        eps = [ProbeEp(k, ip, self.pods[k].ns) for k, ip in self.addresses(family).items()]
        res = probe_matrix(eps, eps, [(port, protocol)], timeout=0.3)
        return {(r.src, r.dst): (r.allowed, r.reason) for r in res}



def replay(model: Model, case: nc.NetpolCase, family: int) -> list[str]:
    """The case's steps, each probe over ``family``; the differing cells, if any."""
    case = nc.load_case(case.path, model.addresses(family))
    model.reset()
    failures = []
    for si, step in enumerate(case.steps):
        model.run(step.actions)
        for probe in step.probes:
            cells = model.probe(family, probe.protocol, probe.port)
            wrong = [f"{f}->{t} ({cells[(f, t)][1]})" for f in nc.PODS for t in nc.PODS
                     if f != t and cells[(f, t)][0] != probe.expected[(f, t)]]
            if wrong:
                failures.append(f"IPv{family} step {si} {probe.protocol}/{probe.port}: {', '.join(wrong)}")
    return failures
