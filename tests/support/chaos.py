"""The chaos soak: a 3-node lab under pod churn, label and policy changes, probes and daemon kills.

One engine for the short soak in the tests (tests/lab/test_soak.py) and the long one
(bench/soak.py). For a fixed duration:

* churn workers run CNI ADD and DEL concurrently against the node agents, as kubelets would, for
  pods the soak creates itself (netns ``<lab>.pod.soak.<n>``, so ``lab down`` removes any left);
  an ADD refused with "try again later" (agent being killed) is retried, like a kubelet;
* label changes of the probe pods and NetworkPolicy create/replace/delete go through
  ``novanet lab apply/delete`` (the user's path);
* probe rounds sample pod pairs with ``novanet lab probe`` and compare every verdict with the
  independent reference evaluator (tests/unit/policy/policy_reference.py); a disagreement is
  re-probed once the lab has converged (every agent ready, at the lab's manifest version, with
  no policy work pending) and counts as a violation only if it is still wrong then;
* at random moments a node's agent or dataplane is SIGKILLed, or both at once (the node's whole
  NovaNet), or in native mode its bgpd or bfdd.

Two pings between pods no policy ever selects run all the time (one cross-node, one same-node):
established, allowed flows, which must not lose a single request, except across a bfdd crash on
a node the cross-node ping passes (native mode): that is a forwarding failure to BFD's peers, so
its loss window is measured and must end within BFDD_LOSS_BOUND_SECONDS. At the end every churn pod is
deleted, the lab converges, and the invariants are checked on every node: no leaked IP, no
orphan veth or tcx link, no endpoint missing from (or stale in) the datapath's maps, no remote
entry for a pod that does not exist, a final probe of every probe-pod pair that agrees with the
reference, and nothing the lab's daemons wrote that is world-writable.

Seeded: the same seed gives the same sequence of operations (each worker draws from its own
generator); how they interleave with one another and with the kills depends on timing.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import random
import signal
import stat
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from novanet_core.api.client import ApiClient, Unreachable
from novanet_core.api.protocol import ApiError
from tests.support.lab import LabUnderTest
from tests.support.ping import PingWatch
from tests.unit.policy.policy_reference import RPod, RWorld, allowed

APPS = ("x", "y")
PROBE_PORTS = (80, 81)
NODES = ("node-1", "node-2", "node-3")
PING_INTERVAL = 0.05
# A bfdd crash is a forwarding failure to its peers, by design of BFD: FRR's bfdd runs in the
# control plane (it does not set the control-plane-independent bit of RFC 5880), so its silence
# looks like a dead link and the peers withdraw the node's routes until bfdd is back and the
# sessions are up again. Cross-node requests of a ping that passes the node are lost in that
# window; it is measured per crash and must end within this bound: detection (3 x 300 ms), bfdd
# started anew at once (as watchfrr does), the BFD session up again (FRR sends 1 s apart while
# down), the peers' BGP sessions re-established and the routes installed (the hold time is 9 s:
# a window beyond that is no longer BFD's doing). Any other loss, and a longer window, is a violation.
BFDD_LOSS_BOUND_SECONDS = 10.0


def spec(mode: str) -> dict[str, Any]:
    cluster: dict[str, Any] = {"clusterCIDR": "10.42.0.0/16", "datapath": "ebpf", "policy": {"defaultDeny": False}}
    if mode == "native":
        cluster.update(routingMode="native", routing={"type": "frr-bgp", "settings": {
            "bfd": {"enabled": True, "receiveInterval": 300, "transmitInterval": 300, "detectMultiplier": 3},
            "reconcileInterval": 2}})
    else:
        cluster.update(routingMode="overlay", tunnelProtocol="vxlan")
    ports = [{"name": f"p{p}", "port": p, "protocol": "TCP"} for p in PROBE_PORTS]
    pods = [{"name": f"p{i}", "namespace": ns, "node": NODES[i % 3], "labels": {"role": "probe", "app": APPS[i % 2]},
             "ports": ports} for i, ns in enumerate(("pa", "pa", "pa", "pb", "pb", "pb"))]
    # Never selected by any policy the soak makes: their flows stay allowed throughout.
    pods += [{"name": n, "namespace": "est", "node": node, "labels": {"role": "est"}, "ports": ports[:1]}
             for n, node in (("est-a", "node-1"), ("est-b", "node-2"), ("est-c", "node-1"))]
    return {"cluster": cluster, "underlay": {"cidr": "172.30.0.0/24", "mtu": 1500},
            "nodes": [{"name": n} for n in NODES],
            "namespaces": [{"name": "pa", "labels": {"team": "a"}}, {"name": "pb", "labels": {"team": "b"}},
                           {"name": "est", "labels": {}}],
            "pods": pods}


def policy_templates() -> list[tuple[str, dict[str, Any]]]:
    """(namespace, spec) pool; each selects role=probe pods only."""
    def sel(app: str) -> dict[str, Any]:
        return {"matchLabels": {"role": "probe", "app": app}}

    return [
        ("pa", {"podSelector": sel("x"), "policyTypes": ["Ingress"]}),
        ("pb", {"podSelector": sel("y"), "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "x"}}}],
                                                     "ports": [{"protocol": "TCP", "port": 80}]}]}),
        ("pa", {"podSelector": sel("y"), "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "b"}}}]}]}),
        ("pb", {"podSelector": sel("x"), "policyTypes": ["Egress"]}),
        ("pa", {"podSelector": sel("x"), "policyTypes": ["Egress"],
                "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "y"}}, "namespaceSelector": {}}],
                            "ports": [{"protocol": "TCP", "port": 81}]}]}),
        ("pb", {"podSelector": {"matchLabels": {"role": "probe"}},
                "ingress": [{"ports": [{"protocol": "TCP", "port": 81}]}]}),
    ]


@dataclass
class Report:
    seed: int
    mode: str
    seconds: float = 0.0
    ops: collections.Counter[str] = field(default_factory=collections.Counter)
    kills: collections.Counter[str] = field(default_factory=collections.Counter)
    probes: int = 0
    transient: int = 0  # wrong while changes were in flight, right once converged
    violations: list[str] = field(default_factory=list)
    pings: dict[str, dict[str, int]] = field(default_factory=dict)
    # Per bfdd crash on a node a ping passes: requests lost and how long (BFDD_LOSS_BOUND_SECONDS).
    bfdd_windows: list[dict[str, Any]] = field(default_factory=list)
    timeline: list[dict[str, Any]] = field(default_factory=list)  # the kills, with the pings' sequence numbers
    action_seconds: collections.Counter[str] = field(default_factory=collections.Counter)  # where the time went

    def to_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "mode": self.mode, "seconds": round(self.seconds, 1), "operations": dict(self.ops),
                "operationsTotal": sum(self.ops.values()), "kills": dict(self.kills),
                "killsTotal": sum(self.kills.values()), "probes": self.probes, "transientMismatches": self.transient,
                "violations": self.violations, "pings": self.pings, "bfddLossWindows": self.bfdd_windows,
                "bfddLossBoundSeconds": BFDD_LOSS_BOUND_SECONDS, "timeline": self.timeline,
                "actionSeconds": {k: round(v, 1) for k, v in self.action_seconds.items()}}

    def summary(self) -> str:
        d = self.to_dict()
        return (f"soak ({self.mode}, seed {self.seed}, {d['seconds']} s): {d['operationsTotal']} operations "
                f"{dict(sorted(self.ops.items()))}, {d['killsTotal']} kills {dict(sorted(self.kills.items()))}, "
                f"{self.probes} probes ({self.transient} transient mismatches), pings "
                f"{self.pings}, bfdd crash loss windows {[(w['node'], w['lost'], w['seconds']) for w in self.bfdd_windows]}, "
                f"seconds per action kind {d['actionSeconds']}, violations = {len(self.violations)}"
                + "".join(f"\n  VIOLATION: {v}" for v in self.violations))


class Soak:
    def __init__(self, workdir: Path, seed: int = 1, mode: str = "overlay", churn_workers: int = 2,
                 action_interval: float = 1.5, kill_every: float = 12.0, max_churn_pods: int = 6) -> None:
        self.workdir, self.seed, self.mode = workdir, seed, mode
        self.rng = random.Random(seed)
        self.workers, self.action_interval, self.kill_every = churn_workers, action_interval, kill_every
        self.max_churn = max_churn_pods
        self.lab = LabUnderTest(spec(mode), workdir)
        self.rep = Report(seed=seed, mode=mode)
        self.labels = {f"{p['namespace']}/{p['name']}": dict(p["labels"]) for p in spec(mode)["pods"]}
        self.ns_labels = {n["name"]: n["labels"] for n in spec(mode)["namespaces"]}
        self.policies: dict[str, tuple[str, dict[str, Any]]] = {}  # name -> (namespace, spec)
        self.churn: dict[str, tuple[str, str, str]] = {}  # container id -> (node, netns name, ip)
        self.churn_lock = threading.Lock()
        self.lab_lock = threading.Lock()  # one lab CLI change at a time from this process (apply/restart)
        self.stop = threading.Event()
        self.n = 0
        self.pings: dict[str, PingWatch] = {}
        self.ping_nodes: dict[str, set[str]] = {}  # the nodes whose routes a ping's requests depend on
        self.t0 = time.monotonic()

    # ------------------------------------------------------------------ lab helpers
    def up(self) -> None:
        self.lab.up()
        st = self.lab.status()
        self.ips = {f"{p['namespace']}/{p['name']}": p["ip"] for p in st["pods"]}

    def down(self) -> None:
        for w in self.pings.values():
            w.stop()
        self.lab.down()

    def _file(self, docs: list[dict[str, Any]]) -> str:
        self.n += 1
        f = self.workdir / f"soak-{self.n}.yaml"
        f.write_text(yaml.safe_dump_all(docs, sort_keys=False))
        return str(f)

    def _agent(self, node: str, method: str, params: dict[str, Any] | None = None) -> Any:
        with ApiClient(str(self.lab.paths.socket(node, "agent")), timeout=30) as c:
            return c.call(method, params)

    def _dp(self, node: str, method: str, params: dict[str, Any] | None = None) -> Any:
        with ApiClient(str(self.lab.paths.socket(node, "dataplane")), timeout=30) as c:
            return c.call(method, params)

    # ------------------------------------------------------------------ churn (concurrent CNI)
    def _cni(self, node: str, command: str, cid: str, netns: str, pod: str) -> tuple[int, Any]:
        env = {"PATH": os.environ.get("PATH", ""), "CNI_COMMAND": command, "CNI_CONTAINERID": cid,
               "CNI_NETNS": f"/run/netns/{netns}", "CNI_IFNAME": "eth0", "CNI_PATH": str(Path(sys.executable).parent),
               "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=soak;K8S_POD_NAME={pod}"}
        conf = {"cniVersion": "1.1.0", "name": "novanet", "type": "novanet-cni",
                "agentSocket": str(self.lab.paths.socket(node, "cni"))}
        p = subprocess.run(["nsenter", f"--net={self.lab.node_netns(node)}", str(Path(sys.executable).parent / "novanet-cni")],
                           input=json.dumps(conf), capture_output=True, text=True, env=env, timeout=120)
        if "Traceback" in p.stderr:
            self.violation(f"CNI {command} {cid[:12]} on {node} printed a traceback: {p.stderr[-400:]}")
        return p.returncode, (json.loads(p.stdout) if p.stdout.strip() else None)

    def _churn_worker(self, idx: int) -> None:
        rng = random.Random(self.seed * 1000 + idx)
        k = 0
        mine: list[str] = []
        while not self.stop.is_set():
            if mine and (len(mine) >= self.max_churn // self.workers or rng.random() < 0.45):
                cid = mine.pop(rng.randrange(len(mine)))
                self._churn_del(cid)
            else:
                k += 1
                # Like a runtime's ids: 64 hex digits (the host veth is named after the first 11).
                cid = hashlib.sha256(f"{self.lab.name}/{self.seed}/{idx}/{k}".encode()).hexdigest()
                if self._churn_add(cid, NODES[rng.randrange(3)], f"c{idx}-{k}"):
                    mine.append(cid)

    def _churn_add(self, cid: str, node: str, pod: str) -> bool:
        netns = f"{self.lab.name}.pod.soak.{pod}"
        subprocess.run(["ip", "netns", "add", netns], check=True, capture_output=True)
        while not self.stop.is_set():
            rc, out = self._cni(node, "ADD", cid, netns, pod)
            if rc == 0:
                ip = out["ips"][0]["address"].split("/")[0]
                with self.churn_lock:
                    clash = [c for c, v in self.churn.items() if v[2] == ip] + [k for k, v in self.ips.items() if v == ip]
                    self.churn[cid] = (node, netns, ip)
                if clash:
                    self.violation(f"ADD {cid[:16]} on {node} got {ip}, already held by {clash}")
                self.rep.ops["pod_add"] += 1
                return True
            if out and out.get("code") == 11:  # agent restarting: a kubelet retries
                self.rep.ops["pod_add_retry"] += 1
                self.stop.wait(0.3)
                continue
            # Anything else must be a clean failure: nothing left behind (checked at the end).
            self.rep.ops["pod_add_failed"] += 1
            self.rep.violations.append(f"ADD {cid[:16]} on {node} failed: {out}")
            break
        self._cni(node, "DEL", cid, netns, pod)
        subprocess.run(["ip", "netns", "del", netns], capture_output=True)
        return False

    def _churn_del(self, cid: str) -> None:
        with self.churn_lock:
            node, netns, _ = self.churn.pop(cid)
        rc, out = self._cni(node, "DEL", cid, netns, netns.rsplit(".", 1)[1])
        if rc != 0:
            self.violation(f"DEL {cid[:16]} on {node} failed: {out}")
        subprocess.run(["ip", "netns", "del", netns], capture_output=True)
        self.rep.ops["pod_del"] += 1

    # ------------------------------------------------------------------ changes
    def violation(self, msg: str) -> None:
        self.rep.violations.append(msg)

    def _apply(self, docs: list[dict[str, Any]]) -> None:
        with self.lab_lock:
            self.lab.cli("lab", "apply", "-f", self._file(docs), "-q", timeout=180)

    def change_labels(self) -> None:
        key = self.rng.choice(sorted(k for k in self.labels if k.startswith("p")))
        ns, name = key.split("/")
        labels = {**self.labels[key], "app": self.rng.choice(APPS)}
        node = next(p["node"] for p in spec(self.mode)["pods"] if p["name"] == name and p["namespace"] == ns)
        self._apply([{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": labels},
                      "spec": {"nodeName": node, "containers": [{"name": "server", "ports": [
                          {"name": f"p{p}", "containerPort": p, "protocol": "TCP"} for p in PROBE_PORTS]}]}}])
        self.labels[key] = labels
        self.rep.ops["label_change"] += 1

    def change_policy(self) -> None:
        templates = policy_templates()
        i = self.rng.randrange(len(templates))
        name = f"soak-{i}"
        ns, pspec = templates[i]
        doc = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
               "metadata": {"name": name, "namespace": ns}, "spec": pspec}
        if name in self.policies and self.rng.random() < 0.5:
            with self.lab_lock:
                self.lab.cli("lab", "delete", "-f", self._file([doc]), "-q", timeout=180)
            del self.policies[name]
            self.rep.ops["policy_delete"] += 1
        else:
            self._apply([doc])
            self.policies[name] = (ns, pspec)
            self.rep.ops["policy_apply"] += 1

    def kill(self) -> None:
        node = self.rng.choice(NODES)
        what = self.rng.choice(("agent", "dataplane", "node") + (("bgpd", "bfdd") if self.mode == "native" else ()))
        before = {k: w.highest for k, w in self.pings.items()}
        with self.lab_lock:
            if what in ("agent", "dataplane"):
                self.lab.cli("lab", "restart", "--node", node, "--daemon", what, "--kill", "-o", "json", timeout=180)
            elif what == "node":
                for d in ("agent", "dataplane"):  # both at once: nothing of NovaNet runs on the node
                    pid_file = self.lab.paths.daemon_pid(node, d)
                    try:
                        os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
                    except (FileNotFoundError, ValueError, ProcessLookupError):
                        pass
                self.lab.cli("lab", "restart", "--node", node, "--daemon", "dataplane", "--daemon", "agent",
                             "-o", "json", timeout=180)
            else:
                from novanet_lab import frr

                frr.restart_daemon(self.lab.paths, node, self.lab.paths.node_netns(node), what, hard=True)
        self.rep.kills[what] += 1
        # Where each ping was when the kill was done: a lost request is then placed on the timeline.
        self.rep.timeline.append({"t": round(time.monotonic() - self.t0, 2), "kill": what, "node": node,
                                  "pingSeqBefore": before, "pingSeq": {k: w.highest for k, w in self.pings.items()}})

    # ------------------------------------------------------------------ probes and the oracle
    def world(self) -> RWorld:
        pods = [RPod(k.split("/")[0], k.split("/")[1], dict(v), self.ips[k],
                     [(f"p{p}", p, "TCP") for p in PROBE_PORTS]) for k, v in self.labels.items()]
        return RWorld(namespaces=dict(self.ns_labels), pods=pods, policies=list(self.policies.values()))

    def expected(self, src: str, dst: str, port: int) -> bool:
        w = self.world()
        by = {f"{p.namespace}/{p.name}": p for p in w.pods}
        return allowed(w, by[src], by[dst], "TCP", port)

    def probe(self, pods: list[str]) -> list[dict[str, Any]]:
        args = ["lab", "probe", "-o", "json", "--protocol", "TCP"]
        for p in pods:
            args += ["--from", p, "--to", p]
        for port in PROBE_PORTS:
            args += ["--port", str(port)]
        out = json.loads(self.lab.cli(*args, timeout=180).stdout)["results"]
        return [r for r in out if r["from"] != r["to"]]

    def converged(self, timeout: float = 120.0) -> None:
        """Every agent ready, at the lab's manifest version, with no policy work pending."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                want = int((self.lab.paths.manifest_dir / "VERSION").read_text().strip() or 0)
                ok = True
                for n in NODES:
                    st = self._agent(n, "status")
                    pol = self._agent(n, "policy.status")
                    last = (n, st.get("ready"), st.get("stateVersion"), want, pol.get("dirty"))
                    ok = ok and st.get("ready") and st.get("stateVersion", 0) >= want and not pol.get("dirty")
                if ok:
                    return
            except (Unreachable, ApiError, OSError, ValueError) as e:
                last = e
            time.sleep(0.2)
        self.violation(f"lab did not converge within {timeout} s: {last}")

    def probe_round(self, pods: list[str] | None = None) -> None:
        with self.lab_lock:
            sample = pods or self.rng.sample(sorted(k for k in self.labels if k.startswith("p")), 3)
            wrong = [r for r in self.probe(sample) if r["allowed"] != self.expected(r["from"], r["to"], r["port"])]
            self.rep.probes += len(sample) * (len(sample) - 1) * len(PROBE_PORTS)
            if not wrong:
                return
            self.converged()
            cells = sorted({r["from"] for r in wrong} | {r["to"] for r in wrong})
            still = [r for r in self.probe(cells) if r["allowed"] != self.expected(r["from"], r["to"], r["port"])
                     and any(w["from"] == r["from"] and w["to"] == r["to"] and w["port"] == r["port"] for w in wrong)]
            self.rep.transient += len(wrong) - len(still)
            for r in still:
                self.violation(f"after convergence {r['from']} -> {r['to']}:{r['port']} was "
                               f"{'allowed' if r['allowed'] else 'blocked'} ({r['reason']}), the reference says "
                               f"{'allowed' if not r['allowed'] else 'blocked'}; policies {sorted(self.policies)}, "
                               f"labels {self.labels.get(r['from'])} -> {self.labels.get(r['to'])}")

    # ------------------------------------------------------------------ the run
    def start_pings(self) -> None:
        for name, (src, dst) in {"cross-node": ("est/est-a", "est/est-b"),
                                 "same-node": ("est/est-a", "est/est-c")}.items():
            w = PingWatch(lambda *a, s=src: self.lab.in_pod(s, *a), self.ips[dst], interval=PING_INTERVAL)
            w.wait_replies(3, timeout=30)
            self.pings[name] = w
            ends = {self.pod_node(src), self.pod_node(dst)}
            self.ping_nodes[name] = ends if len(ends) > 1 else set()  # same node: no route to lose

    def pod_node(self, key: str) -> str:
        ns, name = key.split("/")
        return next(p["node"] for p in spec(self.mode)["pods"] if p["name"] == name and p["namespace"] == ns)

    def run(self, duration: float) -> Report:
        t0 = self.t0 = time.monotonic()
        self.start_pings()
        threads = [threading.Thread(target=self._guard, args=(self._churn_worker, i), daemon=True,
                                    name=f"churn-{i}") for i in range(self.workers)]
        for t in threads:
            t.start()
        next_kill = t0 + self.kill_every * (0.5 + self.rng.random())
        cycle: list[Any] = []
        try:
            while time.monotonic() - t0 < duration and not self.stop.is_set():
                now = time.monotonic()
                if now >= next_kill:
                    self.kill()
                    self.rep.action_seconds["kill"] += time.monotonic() - now
                    next_kill = now + self.kill_every * (0.5 + self.rng.random())
                else:
                    # Every kind of change in every stretch of the run, in a random order.
                    if not cycle:
                        cycle = [self.change_labels, self.change_policy, self.change_policy, self.probe_round]
                        self.rng.shuffle(cycle)
                    fn = cycle.pop()
                    t = time.monotonic()
                    fn()
                    self.rep.action_seconds[fn.__name__] += time.monotonic() - t
                self.stop.wait(self.action_interval * self.rng.random())
        finally:
            self.stop.set()
            for t in threads:
                t.join(300)
        self.finish()
        self.rep.seconds = time.monotonic() - t0
        return self.rep

    def _guard(self, fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except Exception as e:  # a worker that dies is a finding, not a silent stop
            self.violation(f"{threading.current_thread().name} died: {type(e).__name__}: {e}")
            self.stop.set()

    # ------------------------------------------------------------------ the end checks
    def finish(self) -> None:
        for cid in sorted(self.churn):
            self._churn_del(cid)
        self.converged()
        for name, w in self.pings.items():
            upto = w.mark(ahead=2)
            w.wait_replied(upto)
            lost = w.lost(upto)
            unexcused = self.bfdd_crash_losses(name, lost)
            self.rep.pings[name] = {"sent": upto, "lost": len(lost), "lostAcrossBfddCrashes": len(lost) - len(unexcused)}
            if unexcused:
                near = [k for k in self.rep.timeline if any(abs(k["pingSeq"].get(name, 0) - s) < 40 for s in unexcused)]
                # The last kill begun before the first loss, however long ago (a loss can follow a
                # kill by seconds: a daemon's restart, a route withdrawn once it is back).
                before = [k for k in self.rep.timeline if k["pingSeqBefore"].get(name, 0) <= unexcused[0]][-1:]
                self.violation(f"established {name} ping lost {len(unexcused)} of {upto} requests outside bfdd crash "
                               f"windows (first {unexcused[:10]}); kills within 2 s of them: {near}; the last kill "
                               f"before the first loss: {before}")
        self.check_invariants()
        self.probe_round(sorted(k for k in self.labels if k.startswith("p")))

    def bfdd_crash_losses(self, ping: str, lost: list[int]) -> list[int]:
        """Record the loss windows of bfdd crashes on nodes ``ping`` passes; return the losses no
        such crash explains (see BFDD_LOSS_BOUND_SECONDS)."""
        left = sorted(lost)
        bound = int(BFDD_LOSS_BOUND_SECONDS / PING_INTERVAL)
        for k in self.rep.timeline:
            if k["kill"] != "bfdd" or k["node"] not in self.ping_nodes.get(ping, set()):
                continue
            lo, hi = k["pingSeqBefore"].get(ping, 0), k["pingSeq"].get(ping, 0) + bound
            mine = [s for s in left if lo <= s <= hi]
            left = [s for s in left if not lo <= s <= hi]
            span = (mine[-1] - mine[0] + 1) * PING_INTERVAL if mine else 0.0
            self.rep.bfdd_windows.append({"t": k["t"], "node": k["node"], "ping": ping, "lost": len(mine),
                                          "seconds": round(span, 2), "firstSeq": mine[0] if mine else None})
            if mine and mine[-1] >= hi - 1:  # still losing at the window's end: not bounded
                self.violation(f"{ping} ping: the bfdd crash on {k['node']} at {k['t']} s lost requests up to the "
                               f"end of its {BFDD_LOSS_BOUND_SECONDS} s window ({len(mine)} lost)")
        return left

    def check_invariants(self) -> None:
        st = self.lab.status()
        lab_pods = {p["containerId"]: p for p in st["pods"]}
        all_ips = {p["ip"] for p in st["pods"]}
        for n in NODES:
            eps = self._agent(n, "endpoints.list")
            ipam = {a["address"] for a in self._agent(n, "ipam.list")}
            mine = {cid: p for cid, p in lab_pods.items() if p["node"] == n}
            agent_cids = {e["containerID"] for e in eps if e.get("inAgent")}
            if agent_cids != set(mine):
                self.violation(f"{n}: agent endpoints {sorted(agent_cids - set(mine))} extra, "
                               f"{sorted(set(mine) - agent_cids)} missing")
            want_ips = {p["ip"] for p in mine.values()}
            if ipam != want_ips:
                self.violation(f"{n}: IPAM leaked {sorted(ipam - want_ips)}, lost {sorted(want_ips - ipam)}")
            local = {e["ip"]: e for e in eps if e.get("local", True)}
            for e in local.values():
                if e.get("inDatapath") is False or not e.get("inAgent"):
                    self.violation(f"{n}: endpoint {e['ip']} in agent={e.get('inAgent')} "
                                   f"datapath={e.get('inDatapath', True)}")
            remotes = {e["ip"] for e in self._dp(n, "dp.endpoint.list") if not e.get("local", True)}
            if remotes - all_ips:
                self.violation(f"{n}: remote map entries for pods that do not exist: {sorted(remotes - all_ips)}")
            veths = self._veths(n)
            # The pool asked after the veths were listed (a member the refiller makes meanwhile is
            # in its list, "building" or "ready", by then) and the node listed again after that (a
            # member it lists as ready must be there).
            members = self._agent(n, "status").get("warmPool", {}).get("members", [])
            after = self._veths(n)
            pool = {name for m in members for name in (m["host"], m["peer"])}
            want_veths = {e["host_ifname"] for e in local.values()}
            if veths - pool != want_veths:
                self.violation(f"{n}: orphan veths {sorted(veths - pool - want_veths)}, "
                               f"missing {sorted(want_veths - veths)}")
            gone = sorted(m["host"] for m in members if m["state"] == "ready" and m["host"] not in after)
            if gone:
                self.violation(f"{n}: the warm pool lists ready members that are not on the node: {gone}")
            if pool & want_veths:
                self.violation(f"{n}: pool members that are also pods' veths: {sorted(pool & want_veths)}")
            stale = sorted(p for p in self._link_pins(n) if p not in veths)
            if stale:
                self.violation(f"{n}: link pins for interfaces that are gone: {stale}")
        bad = world_writable([self.lab.paths.state_dir, self.lab.paths.run_dir, self.lab.paths.bpf_dir])
        if bad:
            self.violation(f"world-writable paths: {bad[:10]}")

    def _veths(self, node: str) -> set[str]:
        out = subprocess.run(["ip", "-n", self.lab.paths.node_netns(node), "-j", "link", "show", "type", "veth"],
                             capture_output=True, text=True).stdout
        return {link["ifname"] for link in json.loads(out or "[]") if link["ifname"].startswith("nv")}

    def _link_pins(self, node: str) -> set[str]:
        """Interfaces that have a pinned tcx link (``<root>/links/<ifname>_ingress|_egress``): pod veths
        and warm-pool host ends."""
        d = self.lab.paths.node_bpf_root(node) / "links"
        names = {p.name.rsplit("_", 1)[0] for p in d.iterdir()} if d.is_dir() else set()
        return {n for n in names if n.startswith("nv") and (len(n) == 13 or n.startswith("nvwarm"))}


def world_writable(roots: list[Path]) -> list[str]:
    bad = []
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for p in [Path(dirpath)] + [Path(dirpath) / n for n in dirnames + filenames]:
                try:
                    st = os.lstat(p)
                except FileNotFoundError:
                    continue
                if stat.S_ISLNK(st.st_mode):
                    continue
                if st.st_mode & stat.S_IWOTH and not (stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX):
                    bad.append(f"{p} {oct(stat.S_IMODE(st.st_mode))}")
    return bad
