"""The lab's cluster DNS: a real DNS server (dnsmasq) in a pod, serving the lab's Service names.

A pod with ``server: dns`` runs dnsmasq instead of the pod server. It answers, over UDP and TCP
on port 53, what CoreDNS's kubernetes plugin answers for Services:
``<service>.<namespace>.svc.<domain>`` is the ClusterIP, or for a headless Service one A record
per ready endpoint; any other name under the cluster domain is NXDOMAIN (dnsmasq ``--local``).
It has no upstream: names outside the cluster domain are refused (no Internet in the lab).
The names live in a hosts file the lab rewrites after every change and dnsmasq re-reads on SIGHUP.

Pods resolve through it the way the kubelet sets them up (``--cluster-dns``): when the lab has
a Service ``kube-system/kube-dns`` with a ClusterIP, every pod gets a resolv.conf with that
nameserver, the search path ``<ns>.svc.<domain> svc.<domain> <domain>`` and ``ndots:5``.
``novanet lab exec`` runs commands with it mounted over /etc/resolv.conf in a private mount
namespace (a netns has no files of its own).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from novanet_core.state.model import ClusterState
from novanet_lab import netns, procs
from novanet_lab.agents import markers
from novanet_lab.paths import LabPaths
from novanet_lab.state import LabState, PodState

CLUSTER_DOMAIN = "cluster.local"
KUBE_DNS = "kube-system/kube-dns"
PORT = 53


def hosts_file(paths: LabPaths) -> Path:
    return paths.run_dir / "dns" / "hosts"


def resolv_file(paths: LabPaths, pod: PodState) -> Path:
    return paths.pods_run_dir / f"{pod.namespace}.{pod.name}.resolv.conf"


def records(state: ClusterState) -> list[str]:
    """Hosts-file lines: ``<ip> <name>`` for every Service name the cluster DNS answers."""
    lines = []
    for svc in sorted(state.services.values(), key=lambda s: s.key):
        fqdn = f"{svc.name}.{svc.namespace}.svc.{CLUSTER_DOMAIN}"
        if svc.type == "ExternalName":
            continue  # a CNAME in CoreDNS; not emulated (no upstream to resolve it through)
        if svc.headless:
            ips = sorted({e.addresses[0] for s in state.endpointslices.values()
                          if s.namespace == svc.namespace and s.service_name == svc.name
                          for e in s.endpoints if e.ready})
        else:
            ips = [ip for ip in svc.cluster_ips or ((svc.cluster_ip,) if svc.cluster_ip else ())]
        lines.extend(f"{ip} {fqdn}" for ip in ips)
    return lines


def argv(paths: LabPaths) -> list[str]:
    return ["dnsmasq", "--keep-in-foreground", "--log-facility=-", "--conf-file=/dev/null", "--no-resolv",
            "--no-hosts", f"--addn-hosts={hosts_file(paths)}", f"--local=/{CLUSTER_DOMAIN}/", "--pid-file=",
            f"--port={PORT}"]


def write_hosts(paths: LabPaths, state: ClusterState) -> bool:
    """Rewrite the hosts file; True when it changed."""
    path = hosts_file(paths)
    text = "\n".join(records(state)) + "\n"
    try:
        if path.read_text() == text:
            return False
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(".hosts.tmp")
    tmp.write_text(text)
    os.chmod(tmp, 0o644)  # dnsmasq re-reads it after dropping to its own user
    tmp.replace(path)
    return True


def cluster_dns_ip(state: ClusterState) -> str | None:
    svc = state.services.get(KUBE_DNS)
    return svc.cluster_ip if svc is not None and not svc.headless else None


def write_resolv_confs(paths: LabPaths, st: LabState, state: ClusterState) -> None:
    ip = cluster_dns_ip(state)
    for pod in st.pods.values():
        path = resolv_file(paths, pod)
        if ip is None:
            path.unlink(missing_ok=True)
            continue
        text = (f"search {pod.namespace}.svc.{CLUSTER_DOMAIN} svc.{CLUSTER_DOMAIN} {CLUSTER_DOMAIN}\n"
                f"nameserver {ip}\noptions ndots:5\n")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def sync(paths: LabPaths, st: LabState, state: ClusterState) -> None:
    """Names and resolv.confs in step with ``state``; running DNS servers told to re-read."""
    changed = write_hosts(paths, state)
    write_resolv_confs(paths, st, state)
    if not changed:
        return
    for pod in st.pods.values():
        if pod.server != "dns":
            continue
        pid = procs.owned_pid(paths.pod_pid(pod.namespace, pod.name), markers(paths))
        if pid:
            os.kill(pid, signal.SIGHUP)


def listening(netns_name: str, port: int = PORT) -> bool:
    """Are both the UDP and the TCP socket of ``port`` bound in that netns (dnsmasq is serving)?"""
    hexport = f":{port:04X}"
    with netns.entered(netns_name):
        # /proc/thread-self/net follows the calling thread's netns.
        tcp = Path("/proc/thread-self/net/tcp").read_text().splitlines()[1:]
        udp = Path("/proc/thread-self/net/udp").read_text().splitlines()[1:]
    tcp_listen = any(f.split()[1].endswith(hexport) and f.split()[3] == "0A" for f in tcp)
    udp_bound = any(f.split()[1].endswith(hexport) for f in udp)
    return tcp_listen and udp_bound
