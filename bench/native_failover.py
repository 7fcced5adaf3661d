"""Native routing failover and restart figures, on 3-node native labs (full mesh).

* link failure with BFD (300 ms × 3) and without (BGP keepalive 3 s / hold 9 s): node-3's underlay
  port goes down; time until node-1 and node-2 lose the ``proto bgp`` route to node-3's PodCIDR,
  and until it is back after the link returns;
* agent SIGKILL + restart: BGP sessions' connection counts and uptime before/after (no flap), and
  how many commands the new agent sent to FRR (0 = already in the desired state);
* bgpd SIGKILL + restart (as watchfrr would): time until all sessions are Established again with
  their prefixes, and until the node's ``proto bgp`` routes are back.

Usage: ``sudo .venv/bin/python bench/native_failover.py [--runs 3]`` (root).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from novanet_lab import frr, frr_failover, restart
from novanet_lab.paths import LabPaths

from bench.common import save

BIN = Path(sys.executable).parent


def spec(name: str, bfd: bool, gr: bool) -> dict:
    return {"name": name, "cluster": {"routingMode": "native", "routing": {"type": "frr-bgp", "settings": {
        "reconcileInterval": 2, "gracefulRestart": {"enabled": gr},
        "bfd": {"enabled": bfd, "receiveInterval": 300, "transmitInterval": 300, "detectMultiplier": 3}}}},
            "nodes": [{"name": "node-1"}, {"name": "node-2"}, {"name": "node-3"}],
            "pods": [{"name": f"p{i}", "node": f"node-{i}", "ports": [{"port": 80}]} for i in (1, 2, 3)]}


def novanet(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([str(BIN / "novanet"), *args], capture_output=True, text=True, timeout=300)
    if check and r.returncode != 0:
        raise SystemExit(f"novanet {' '.join(args)} failed:\n{r.stderr}")
    return r


def peers(lab: str, node: str) -> dict:
    out = subprocess.run(["vtysh", "-N", frr.pathspace(LabPaths(lab), node), "-c", "show bgp summary json"],
                         capture_output=True, text=True, timeout=20).stdout
    return (json.loads(out or "{}").get("ipv4Unicast") or {}).get("peers") or {}


def link_failover(lab: str, runs: int, timeout: float) -> dict:
    down, back = [], []
    for _ in range(runs):
        r = frr_failover.measure(lab, "node-3", ["node-1", "node-2"], timeout=timeout)
        down += [v for v in r.seconds.values() if v is not None]
        back += [v for v in r.restored.values() if v is not None]
        missing = [o for o, v in r.seconds.items() if v is None]
        if missing:
            raise SystemExit(f"route never withdrawn on {missing}")
        time.sleep(3)  # sessions fully up again before the next run
    return {"withdrawn_s": [round(x, 3) for x in down], "withdrawn_median_s": round(statistics.median(down), 3),
            "withdrawn_max_s": round(max(down), 3), "restored_median_s": round(statistics.median(back), 3)}


def agent_kill(lab: str) -> dict:
    before = peers(lab, "node-2")
    restart.restart(lab, ["node-2"], ["agent"], hard=True)
    time.sleep(3)
    after = peers(lab, "node-2")
    from novanet_core.api.client import ApiClient

    with ApiClient(str(LabPaths(lab).socket("node-2", "agent")), timeout=10) as c:
        st = c.call("routing.status")
    return {"sessions": len(after),
            "flapped": sum(after[a]["connectionsEstablished"] != p["connectionsEstablished"] for a, p in before.items()),
            "uptime_kept": all(after[a]["peerUptimeMsec"] > p["peerUptimeMsec"] for a, p in before.items()),
            "commands_sent_by_new_agent": st["applies"]}


def bgpd_restart(lab: str) -> dict:
    paths = LabPaths(lab)
    t0 = time.monotonic()
    frr.restart_daemon(paths, "node-3", paths.node_netns("node-3"), "bgpd", hard=True)
    established = routes = None
    while time.monotonic() - t0 < 60 and routes is None:
        if established is None:
            p = peers(lab, "node-3")
            if len(p) == 2 and all(v["state"] == "Established" and v.get("pfxRcd", 0) > 0 for v in p.values()):
                established = time.monotonic() - t0
        if established is not None and len(frr.bgp_routes(paths.node_netns("node-3"))) == 2:
            routes = time.monotonic() - t0
        time.sleep(0.05)
    return {"established_s": None if established is None else round(established, 2),
            "routes_back_s": None if routes is None else round(routes, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    out: dict = {}
    # Without BFD a dead peer is noticed when the hold timer (9 s) expires; FRR then treats the
    # peer as restarting if graceful restart was negotiated and keeps its routes as stale for
    # up to restart-time (120 s). A BFD-down Cease is a hard reset: routes go at once.
    variants = [("bfd_300ms_x3", True, True, a.runs, 30.0), ("no_bfd_gr_off_hold_9s", False, False, 1, 60.0),
                ("no_bfd_gr_on_hold_9s", False, True, 1, 200.0)]
    for key, bfd, gr, runs, timeout in variants:
        lab = f"bf{key[:6].replace('_', '')}{os.getpid() % 10000}"
        with tempfile.TemporaryDirectory() as tmp:
            f = Path(tmp) / "lab.yaml"
            f.write_text(yaml.safe_dump(spec(lab, bfd, gr)))
            novanet("lab", "up", "--spec", str(f), "-q")
        try:
            time.sleep(2)  # BFD sessions up
            out[key] = {"link_down": link_failover(lab, runs, timeout)}
            if bfd:
                out[key]["agent_sigkill"] = agent_kill(lab)
                out[key]["bgpd_restart"] = bgpd_restart(lab)
            print(json.dumps({key: out[key]}), file=sys.stderr)
        finally:
            novanet("lab", "down", "--name", lab, "-q", check=False)
    path = save("native_failover", out)
    print(json.dumps(out, indent=2))
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
