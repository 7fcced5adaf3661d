#!/bin/bash
# The FRR sidecar of the DaemonSet pod (native routing): zebra, bgpd and bfdd with the startup
# config FRR needs before NovaNet's agent configures it through vtysh (/run/frr is shared with
# the agent). Exits when any daemon does, so that the kubelet restarts the container.
#
# A rolling restart of the DaemonSet restarts FRR with the agent, so the node's forwarding state
# must outlive FRR (BGP graceful restart, RFC 4724, with the F-bit the agent configures):
# - zebra -r leaves the routes it installed in the kernel when it exits, and the next zebra's -K
#   keeps them for FRR_KEEP_ROUTES seconds (the agent reconfigures bgpd well within that) instead
#   of sweeping them at startup;
# - on SIGTERM bgpd is stopped with SIGKILL: a bgpd that exits cleanly sends its peers a Cease
#   NOTIFICATION, upon which they drop our routes at once (FRR 8.4 has no RFC 8538 N-bit to make a
#   Cease graceful); a session that just ends leaves them stale until our End-of-RIB.
set -eu
mkdir -p /run/frr /etc/frr
chown frr:frr /run/frr
[ -s /etc/frr/frr.conf ] || printf 'frr defaults datacenter\nhostname %s\n' "$(hostname)" > /etc/frr/frr.conf
: > /etc/frr/vtysh.conf
chown frr:frr /etc/frr/frr.conf /etc/frr/vtysh.conf
/usr/lib/frr/zebra -f /etc/frr/frr.conf -u frr -g frr -r -K "${FRR_KEEP_ROUTES:-120}" &
zebra=$!
for i in $(seq 100); do [ -S /run/frr/zebra.vty ] && break; sleep 0.1; done
/usr/lib/frr/bgpd -f /etc/frr/frr.conf -u frr -g frr &
bgpd=$!
/usr/lib/frr/bfdd -f /etc/frr/frr.conf -u frr -g frr &
bfdd=$!
stop() {
  kill -KILL "$bgpd" 2>/dev/null || true
  kill -TERM "$zebra" "$bfdd" 2>/dev/null || true
  wait
  exit 0
}
trap stop TERM INT
status=0
wait -n || status=$?
# A daemon exited by itself: take the others down and fail, so the container is restarted.
kill -TERM "$zebra" "$bgpd" "$bfdd" 2>/dev/null || true
wait || true
exit $(( status ? status : 1 ))
