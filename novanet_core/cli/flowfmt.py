"""How flow events print (shared by ``novanetctl flows`` and ``novanet lab flows``): the original's
table row and a compact line that names pods, Hubble's ``observe`` style."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import click

FLOW_COLUMNS = ["TIMESTAMP", "SRC_IP", "DST_IP", "SRC_ID", "DST_ID", "PROTO", "PORT", "VERDICT", "BYTES"]
L4_WITH_PORTS = (6, 17, 132)


def ts(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%H:%M:%S.%f")[:-3]


def flow_row(e: dict[str, Any], with_reason: bool) -> list[str]:
    row = [ts(e["timestamp"]), e["src_ip"], e["dst_ip"], str(e["src_identity"]), str(e["dst_identity"]),
           e["protocol_name"], str(e["dst_port"]), e["verdict"], str(e["bytes"])]
    if with_reason:
        # POLICY_DENIED names the policy behind it in the same cell (the column set is a stable contract)
        why = e.get("policy_reason") if e["drop_reason_name"] == "POLICY_DENIED" else None
        row.append(f"{e['drop_reason_name']}: {why}" if why else e["drop_reason_name"])
    return row


def _endpoint(pod: str, ip: str, port: int, identity: int, with_port: bool) -> str:
    where = pod or ip
    return (f"{where}:{port}" if with_port else where) + f" ({identity})"


def compact_line(e: dict[str, Any]) -> str:
    """One human line per event, naming pods."""
    ports = e["protocol"] in L4_WITH_PORTS
    src = _endpoint(e.get("src_pod", ""), e["src_ip"], e["src_port"], e["src_identity"], ports)
    dst = _endpoint(e.get("dst_pod", ""), e["dst_ip"], e["dst_port"], e["dst_identity"], ports)
    flags = f" [{','.join(e['tcp_flags_names'])}]" if e.get("tcp_flags_names") else ""
    node = f" [{e['node']}]" if e.get("node") else ""
    if e["verdict"] == "DENY":
        why = f": {e['policy_reason']}" if e.get("policy_reason") else ""
        verdict = f"DROPPED ({e['drop_reason_name']}{why})"
    else:
        verdict = "FORWARDED"
    return (f"{ts(e['timestamp'])}{node} {src} -> {dst} {e['protocol_name']}{flags} {e.get('direction', '')} "
            f"{verdict} {e['bytes']} B")


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(value: str, now: float | None = None) -> float:
    """``30s``/``5m``/``2h``/``1d`` ago, an ISO 8601 time, or seconds since the epoch."""
    now = dt.datetime.now(dt.UTC).timestamp() if now is None else now
    m = _DURATION.match(value.strip())
    if m:
        return now - float(m.group(1)) * _UNITS[m.group(2)]
    try:
        return float(value)
    except ValueError:
        pass
    try:
        t = dt.datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r}: give a duration (30s, 5m, 2h), an ISO time or epoch seconds") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return t.timestamp()
