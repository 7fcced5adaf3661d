#!/bin/bash
# The FRR sidecar of the DaemonSet pod (native routing): zebra, bgpd and bfdd with the startup
# config FRR needs before NovaNet's agent configures it through vtysh (/run/frr is shared with
# the agent). Exits when any daemon does, so that the kubelet restarts the container.
set -eu
mkdir -p /run/frr /etc/frr
chown frr:frr /run/frr
[ -s /etc/frr/frr.conf ] || printf 'frr defaults datacenter\nhostname %s\n' "$(hostname)" > /etc/frr/frr.conf
: > /etc/frr/vtysh.conf
chown frr:frr /etc/frr/frr.conf /etc/frr/vtysh.conf
/usr/lib/frr/zebra -f /etc/frr/frr.conf -u frr -g frr &
for i in $(seq 100); do [ -S /run/frr/zebra.vty ] && break; sleep 0.1; done
/usr/lib/frr/bgpd -f /etc/frr/frr.conf -u frr -g frr &
/usr/lib/frr/bfdd -f /etc/frr/frr.conf -u frr -g frr &
trap 'kill $(jobs -p) 2>/dev/null' TERM INT
wait -n 2>/dev/null || wait
