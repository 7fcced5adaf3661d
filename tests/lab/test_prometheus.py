"""A real Prometheus (Debian's) scrapes a 3-node lab; every panel of the shipped Grafana dashboard
returns data after traffic; `promtool check metrics` is clean on all six endpoints.

Prometheus runs in a network namespace of the test's own, cabled to the lab's underlay bridge with
an address no node uses, so it reaches every node's agent (:9103) and dataplane (:9104) the way a
cluster's Prometheus reaches its nodes. Native routing (FRR) so that the BGP panel has sessions.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import subprocess
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.lab import LabUnderTest

pytestmark = [pytest.mark.root, pytest.mark.netns, pytest.mark.lab, pytest.mark.slow, pytest.mark.long,
              pytest.mark.skipif(shutil.which("prometheus") is None, reason="contrib/install-deps.sh installs it")]

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "charts" / "novanet" / "dashboards" / "novanet-overview.json"
PROM_IP = "172.30.0.250"
FETCH = ("import sys, urllib.request\n"
         "sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())\n")

POLICY = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: only-a, namespace: x}
spec:
  podSelector: {matchLabels: {pod: b}}
  policyTypes: [Ingress]
  ingress: [{from: [{podSelector: {matchLabels: {pod: a}}}]}]
"""
EXTRA_POD = """
apiVersion: v1
kind: Pod
metadata: {name: c, namespace: y, labels: {pod: c}}
spec: {nodeName: node-3, containers: [{name: s, ports: [{containerPort: 80}]}]}
"""


def spec() -> dict[str, Any]:
    s = yaml.safe_load((ROOT / "examples" / "lab-native.yaml").read_text())
    s["pods"] = [p for p in s["pods"] if p["namespace"] == "x"] + [
        {"name": "a", "namespace": "y", "node": "node-2", "labels": {"pod": "a"}}]
    s["namespaces"] = [n for n in s["namespaces"] if n["name"] in ("x", "y")]
    return s


class Prometheus:
    def __init__(self, lab: LabUnderTest, tmp: Path, targets: list[str]):
        self.lab, self.tmp = lab, tmp
        self.ns = f"nvprom{secrets.token_hex(3)}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.cfg = tmp / "prometheus.yml"
        self.cfg.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {"job_name": "novanet-agent", "static_configs": [{"targets": [f"{t}:9103" for t in targets]}]},
                {"job_name": "novanet-dataplane", "static_configs": [{"targets": [f"{t}:9104" for t in targets]}]},
            ]}))

    def start(self) -> None:
        run = lambda *a: subprocess.run(list(a), check=True, capture_output=True, text=True)  # noqa: E731
        run("ip", "netns", "add", self.ns)
        port = f"u-{self.ns[-6:]}"
        under = self.lab.paths.underlay_netns
        run("ip", "-n", under, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", self.ns)
        run("ip", "-n", under, "link", "set", port, "master", "br0", "up")
        run("ip", "-n", self.ns, "addr", "add", f"{PROM_IP}/24", "dev", "eth0")
        run("ip", "-n", self.ns, "link", "set", "eth0", "up")
        run("ip", "-n", self.ns, "link", "set", "lo", "up")
        log = open(self.tmp / "prometheus.log", "wb")
        self.proc = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{self.ns}", "prometheus", f"--config.file={self.cfg}",
             f"--storage.tsdb.path={self.tmp / 'tsdb'}", f"--web.listen-address={PROM_IP}:9090"],
            stdout=log, stderr=subprocess.STDOUT)
        self.wait(lambda: self.get("/-/ready", raw=True) is not None, "Prometheus ready")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)  # takes its veth with it

    def fetch(self, url: str) -> str | None:
        r = subprocess.run(["nsenter", f"--net=/run/netns/{self.ns}", "python3", "-c", FETCH, url],
                           capture_output=True, text=True, timeout=30)
        return r.stdout if r.returncode == 0 else None

    def get(self, path: str, raw: bool = False) -> Any:
        out = self.fetch(f"http://{PROM_IP}:9090{path}")
        return out if raw or out is None else json.loads(out)

    def query(self, expr: str) -> list[dict[str, Any]]:
        res = self.get("/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        if res is None:
            return []  # no answer this time (a loaded machine): the caller waits and asks again
        assert res["status"] == "success", (expr, res)  # a query Prometheus refuses is a dashboard bug
        return res["data"]["result"]

    def wait(self, pred, what: str, timeout: float = 90) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            v = pred()
            if v:
                return v
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited: {(self.tmp / 'prometheus.log').read_text()[-2000:]}")
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.5)


def panel_queries() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in dash["panels"] for t in p["targets"]]


def finite(result: list[dict[str, Any]]) -> bool:
    return any(not math.isnan(float(r["value"][1])) for r in result)


@pytest.fixture(scope="module")
def scraped(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prom")
    lab = LabUnderTest(spec(), tmp)
    prom = None
    try:
        st = lab.up()
        ips = [n["ip"] for n in st["nodes"]]
        assert PROM_IP not in ips and PROM_IP != (st.get("outside") or {}).get("ip")
        prom = Prometheus(lab, tmp, ips)
        prom.start()
        prom.wait(lambda: (t := prom.get("/api/v1/targets")) and len(t["data"]["activeTargets"]) == 6
                  and all(x["health"] == "up" for x in t["data"]["activeTargets"]), "all six targets up")
        # Traffic: pod to pod on every node, a policy that denies some, a pod added and deleted,
        # and pods talking to the outside host.
        lab.probe("--port", "80", "--protocol", "TCP")
        f = tmp / "policy.yaml"
        f.write_text(POLICY)
        lab.cli("lab", "apply", "-f", str(f))
        g = tmp / "pod.yaml"
        g.write_text(EXTRA_POD)
        lab.cli("lab", "apply", "-f", str(g))
        lab.probe("--port", "80", "--protocol", "TCP")
        lab.cli("lab", "delete", "-f", str(g))
        for pod in ("x/a", "x/b"):
            lab.run_in(lab.pod_netns(pod), "ping", "-c", "3", "-i", "0.2", "-W", "1", st["outside"]["address"])
        yield lab, prom, ips
    finally:
        if prom is not None:
            prom.stop()
        lab.down()


def test_every_dashboard_panel_returns_data(scraped):
    lab, prom, _ = scraped
    empty: dict[str, str] = {}
    for title, expr in panel_queries():
        try:
            prom.wait(lambda expr=expr: finite(prom.query(expr)), f"{title}: {expr}", timeout=60)
        except AssertionError:
            empty[title] = expr
    assert not empty, f"panels without data: {empty}"
    # and the data means what it says: traffic forwarded, policy denied, BGP up, egress counted, a
    # DEL counted. Waited for, not read once: on a loaded machine a scrape can time out, and an
    # instant query then finds that target's series stale for a moment.
    def at_least(expr: str, want: float) -> bool:
        r = prom.query(expr)
        return bool(r) and float(r[0]["value"][1]) >= want

    for expr, want in (("sum(novanet_dataplane_forwarded_packets_total)", 1),
                       ('sum(novanet_policy_verdicts_total{verdict="denied"})', 1),
                       ('sum(novanet_bgp_sessions{state="Established"})', 6),  # every node's two sessions
                       ("sum(novanet_egress_rule_packets_total)", 1),
                       ('sum(novanet_cni_operations_total{operation="DEL",result="success"})', 1)):
        prom.wait(lambda expr=expr, want=want: at_least(expr, want), f"{expr} >= {want}")


def test_promtool_clean_on_every_endpoint(scraped):
    _, prom, ips = scraped
    for ip in ips:
        for port in (9103, 9104):
            text = prom.fetch(f"http://{ip}:{port}/metrics")
            assert text and "novanet_build_info" in text, (ip, port)
            r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True,
                               timeout=30)
            assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), f"{ip}:{port}: {r.stdout}{r.stderr}"


def test_chart_ships_the_dashboard_in_a_sidecar_configmap():
    tpl = (ROOT / "charts" / "novanet" / "templates" / "grafana-dashboard.yaml").read_text()
    assert 'grafana_dashboard' in tpl and '.Files.Get "dashboards/novanet-overview.json"' in tpl
    assert os.path.exists(DASHBOARD) and json.loads(DASHBOARD.read_text())["uid"] == "novanet-overview"
