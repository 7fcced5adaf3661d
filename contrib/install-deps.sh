#!/usr/bin/env bash
# Installs the system packages NovaNet's lab, tests and benchmarks need on Debian 12.
# Idempotent: re-running only installs what is missing. Waits for the dpkg lock (another install
# running on the machine) instead of failing.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
PKGS=(
  python3-bpfcc libbpfcc            # BCC: compiles and loads our BPF C from Python
  linux-libc-dev                    # uapi headers for the header tree BCC needs (no kernel headers here)
  iproute2 iputils-ping netcat-openbsd procps util-linux
  iperf3 sockperf nftables iptables  # benchmarks and their peers
  containernetworking-plugins       # reference bridge + host-local for benchmarks, loopback for podman
  podman runc busybox-static        # a real CNI client
  tcpdump tshark ethtool            # wire-format proofs; ethtool switches tunnel offloads (overlay tests)
  frr                               # native routing
  gcc libc6-dev make                # the static C CNI binary (cni/)
  dnsmasq-base bind9-dnsutils       # the lab's cluster DNS server (binary only: no host service) and dig
  mmdebstrap catatonit              # the node image (make image) and podman kube play's pause image
  prometheus                        # promtool check metrics, and a real Prometheus scraping a lab in tests
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  apt-get -o DPkg::Lock::Timeout=900 update -qq
  apt-get -o DPkg::Lock::Timeout=900 install -y -qq --no-install-recommends "${missing[@]}"
fi
# Debian's prometheus package starts its own server (port 9090) where an init system runs; tests
# run their own Prometheus in a netns of their own, so the packaged one stays off.
if command -v systemctl >/dev/null && systemctl is-active -q prometheus 2>/dev/null; then
  systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
