"""Traffic in each IP family kept running through a lab while its daemons are killed, and what a
pod's addresses look like before and after.

Per family: pings every 10 ms between pod pairs (tests.support.ping.PingWatch: the claim is about
sequence numbers) and one established TCP stream (iperf3, one line per second), so a test can
show that no request was lost and that the stream moved data in every second of the disruption.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
from dataclasses import dataclass, field
from typing import Any

from novanet_core import ipfamily
from tests.support.lab import LabUnderTest
from tests.support.ping import PingWatch

IPERF_PORT = 5201
_RATE = re.compile(r"sec\s+[\d.]+ \w?Bytes\s+([\d.]+) \w?bits/sec")


def pod_ips(lab: LabUnderTest) -> dict[str, list[str]]:
    return {f"{p['namespace']}/{p['name']}": list(p["ips"]) for p in lab.status()["pods"]}


def addresses(lab: LabUnderTest) -> dict[str, Any]:
    """Every pod's addresses as each layer holds them: the lab's status, the pod's eth0 (global
    scope), each node's endpoints (novanetctl) and each node's IPAM files (address -> content)."""
    st = lab.status()
    out: dict[str, Any] = {
        "status": {f"{p['namespace']}/{p['name']}": list(p["ips"]) for p in st["pods"]},
        "eth0": {},
        "endpoints": {},
        "ipam": {},
    }
    for pod in out["status"]:
        link = json.loads(
            lab.run_in(lab.pod_netns(pod), "ip", "-j", "addr", "show", "eth0", check=True).stdout
        )
        out["eth0"][pod] = sorted(
            f"{a['local']}/{a['prefixlen']}" for a in link[0]["addr_info"] if a.get("scope") == "global"
        )
    for node in [n["name"] for n in st["nodes"]]:
        out["endpoints"][node] = sorted(
            (e["ip"], e.get("namespace"), e.get("pod"), e["identity"], e["host_ifname"], e["mac"])
            for e in lab.ctl("endpoints", node=node)
        )
        d = lab.paths.node_ipam_dir(node)
        out["ipam"][node] = {
            f.name: f.read_text()
            for f in sorted(d.rglob("*"))
            if f.is_file() and (":" in f.name or f.name.count(".") == 3)
        }
    return out


@dataclass
class Stream:
    family: int
    server: subprocess.Popen[str]
    client: subprocess.Popen[str]
    out: str = ""
    err: str = ""
    ran_to_the_end: bool = False  # still running when stopped: the connection never broke

    def rates(self) -> list[float]:
        """Bits/s of each one-second interval (not the summary)."""
        return [float(x) for x in _RATE.findall(self.out.split("- - - -")[0])]


@dataclass
class FamilyTraffic:
    """Pings per (source, target, family) and a TCP stream per family from ``src`` to ``dst``."""

    lab: LabUnderTest
    pairs: list[tuple[str, str]]
    stream_pair: tuple[str, str] | None = None
    families: tuple[int, ...] = (4, 6)
    watches: dict[tuple[str, str, int], PingWatch] = field(default_factory=dict)
    streams: list[Stream] = field(default_factory=list)

    def start(self) -> None:
        ips = pod_ips(self.lab)
        if self.stream_pair is not None:
            src, dst = self.stream_pair
            for i, fam in enumerate(self.families):
                port = str(IPERF_PORT + i)
                server = self.lab.in_pod(dst, "iperf3", "-s", "-1", "-p", port)
                self.lab.wait_listening(dst, IPERF_PORT + i)
                client = self.lab.in_pod(
                    src,
                    "iperf3",
                    "-c",
                    ipfamily.pick(ips[dst], fam) or "",
                    "-p",
                    port,
                    "-t",
                    "3600",
                    "-i",
                    "1",
                    "-b",
                    "20M",
                    "--forceflush",
                )
                self.streams.append(Stream(fam, server, client))
        for src, dst in self.pairs:
            for fam in self.families:
                ip = ipfamily.pick(ips[dst], fam)
                assert ip, f"{dst} has no IPv{fam} address: {ips[dst]}"
                self.watches[(src, dst, fam)] = PingWatch(
                    lambda *argv, s=src: self.lab.in_pod(s, *argv), ip, interval=0.01
                )
        for w in self.watches.values():
            w.wait_replies(50)

    def mark(self, ahead: int = 0) -> dict[tuple[str, str, int], int]:
        return {k: w.mark(ahead=ahead) for k, w in self.watches.items()}

    def settle(self, ahead: int = 100) -> dict[tuple[str, str, int], int]:
        """A mark ``ahead`` requests past now on every ping, each waited for until answered."""
        last = self.mark(ahead)
        for k, w in self.watches.items():
            w.wait_replied(last[k])
        return last

    def lost(self, last: dict[tuple[str, str, int], int]) -> dict[str, list[int]]:
        """Per ping (``src -> dst IPv<family>``) the sequence numbers up to ``last`` unanswered."""
        return {f"{s} -> {d} IPv{f}": self.watches[(s, d, f)].lost(n) for (s, d, f), n in last.items()}

    def stop(self) -> None:
        for w in self.watches.values():
            w.stop()
        for st in self.streams:
            st.ran_to_the_end = st.client.poll() is None
            if st.ran_to_the_end:
                st.client.send_signal(signal.SIGINT)
            try:
                st.out, st.err = st.client.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                st.client.kill()
                st.out, st.err = st.client.communicate()
            st.server.kill()
            st.server.communicate()


def kill_and_restart_under_traffic(lab: LabUnderTest, traffic: FamilyTraffic, kills: int) -> dict[str, Any]:
    """With ``traffic`` running, SIGKILL every node's agent ``kills`` times, then every node's
    dataplane (``lab restart --kill``, which waits for each new daemon); returns the pings' marks
    before (``first``) and a second after (``last``) the disruption, and the number of kills."""
    report: dict[str, Any] = {"restarts": 0}
    try:
        traffic.start()
        report["first"] = traffic.mark()
        for daemon in ("agent", "dataplane"):
            for _ in range(kills):
                lab.cli("lab", "restart", "--daemon", daemon, "--kill")
                report["restarts"] += len(lab.status()["nodes"])
        report["last"] = traffic.settle(ahead=100)  # a second of traffic past the disruption
    finally:
        traffic.stop()
    return report
