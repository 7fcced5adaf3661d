"""Fuzz targets for the daemons' sockets: the agent's control and CNI sockets and the dataplane's.

Every case goes over a fresh real connection, the way a broken tool or a hostile local root
process would: random framing (noise, several requests in one write, no newline then a
half-close, one byte at a time), random versions, methods and params, and mutated versions of
valid requests. Each answer must be one JSON line per request with a documented error code;
``internal`` (an unhandled exception in a handler) is a finding. A request that was refused
must leave the node's state exactly as it was: endpoints, IPAM files and the datapath's maps.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from tests.fuzz.harness import Finding
from tests.fuzz.mutate import json_values, mutated

ERROR_CODES = {"bad_request", "unsupported_version", "unknown_method", "invalid_params", "permission_denied",
               "request_too_large", "rate_limited", "too_many_connections", "cni", "unavailable", "not_found",
               "unsupported", "datapath"}


def exchange(path: str, payload: bytes, how: str = "plain", timeout: float = 20.0) -> list[dict[str, Any]]:
    """Send ``payload`` and read answer lines until the server has answered every request line or
    closed; ``how``: plain, half_close (shutdown after writing), slow (a few bytes at a time)."""
    # The server skips whitespace-only lines without answering (a keep-alive a client may send),
    # so only lines with content are owed an answer.
    want = sum(1 for part in payload.split(b"\n") if part.strip())
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    out: list[dict[str, Any]] = []
    try:
        s.connect(path)
        if how == "slow":
            for i in range(0, len(payload), 7):
                s.sendall(payload[i:i + 7])
                time.sleep(0.002)
        else:
            s.sendall(payload)
        if how == "half_close" or not payload.endswith(b"\n"):
            s.shutdown(socket.SHUT_WR)
        f = s.makefile("rb")
        while len(out) < want:
            line = f.readline()
            if not line:
                break
            try:
                out.append(json.loads(line))
            except ValueError:
                raise Finding(f"answer is not JSON: {line[:200]!r}") from None
    except TimeoutError:
        raise Finding(f"no answer within {timeout} s to {payload[:200]!r}") from None
    except ConnectionResetError:
        pass  # the server refused a request too large to read, then reset
    finally:
        s.close()
    return out


def check_answers(answers: list[dict[str, Any]]) -> bool:
    """True if every answer was a result, False if all errors were documented refusals."""
    ok = True
    for a in answers:
        if not isinstance(a, dict) or a.get("v") != 1:
            raise Finding(f"answer without protocol version: {a!r}")
        if "error" in a:
            code = a["error"].get("code")
            if code not in ERROR_CODES:
                raise Finding(f"error code {code!r}: {a['error'].get('message', '')[:200]}")
            ok = False
    return ok


# --------------------------------------------------------------------------- inputs

def _line(obj: Any) -> bytes:
    try:
        return json.dumps(obj).encode() + b"\n"
    except (ValueError, TypeError):
        return b"{}\n"


def requests(methods: dict[str, list[dict[str, Any]]]) -> st.SearchStrategy[tuple[str, bytes]]:
    """(how, payload) for a socket whose methods (with valid example params) are ``methods``."""
    names = sorted(methods)
    method = st.sampled_from(names) | st.text(max_size=30) | json_values
    params = st.sampled_from(names).flatmap(
        lambda m: st.sampled_from(methods[m]).flatmap(lambda p: st.tuples(st.just(m), mutated(p))))
    envelope = st.fixed_dictionaries({"v": st.just(1), "id": st.integers(0, 1 << 40) | json_values,
                                      "method": method, "params": json_values})
    valid_ish = params.map(lambda mp: {"v": 1, "id": 1, "method": mp[0], "params": mp[1]})
    noise = st.one_of(st.binary(max_size=200), st.sampled_from((
        b"\n", b"{}\n", b"[]\n", b"null\n", b'{"v": 2, "id": 1, "method": "status"}\n', b'{"v": "1"}\n',
        b"[" * 5000 + b"\n", b'{"v":1,"id":1,"method":"status","params":' + b"[" * 3000 + b"\n",
        b'{"v":1,"id":1,"method":"status"}' + b"\x00" * 10 + b"\n", b"\xff\xfe\n",
        b'{"v":1,"id":1,"method":"status"}\n' * 5)))
    payload = st.one_of(
        valid_ish.map(_line),
        envelope.map(_line),
        noise,
        st.lists(valid_ish.map(_line), min_size=2, max_size=4).map(b"".join),
        valid_ish.map(lambda r: _line(r)[:-1]),  # no newline: answered at end of input
    )
    return st.tuples(st.sampled_from(("plain", "plain", "plain", "half_close", "slow")), payload)


# --------------------------------------------------------------------------- state

def node_state(node: Any, dp_call: Callable[[str, dict[str, Any] | None], Any]) -> dict[str, Any]:
    """What a refused request must not change. ``last_reserved_ip.0`` is left out: a rotation hint
    the allocator moves on every allocation attempt, not state that was 'fine'."""
    ipam_dir = Path(node.config["ipam"]["dataDir"])
    files = {f.name: f.read_bytes() for f in sorted(ipam_dir.iterdir())
             if f.name not in ("lock", "last_reserved_ip.0")} if ipam_dir.is_dir() else {}
    return {
        "endpoints": node.call("endpoints.list"),
        "ipam": node.call("ipam.list"),
        "ipam_files": files,
        "dp_endpoints": dp_call("dp.endpoint.list", None),
        "dp_policy": dp_call("ebpf.policy_entries", None),
        "dp_pairs": dp_call("ebpf.policy_list", None),
        "records": {p.name: p.read_bytes() for p in sorted((node.run / "state" / "endpoints").glob("*.json"))},
    }


def diff(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return [k for k in a if a[k] != b.get(k)]


class SocketTarget:
    """One socket: each case is sent, answers checked; a refused case must change nothing."""

    def __init__(self, path: str, state: Callable[[], dict[str, Any]], health: Callable[[], None]):
        self.path, self.state, self.health = path, state, health
        self.before = state()
        self.changed_by_success = 0
        self.accepted_log: list[bytes] = []  # the last requests that changed state (for a report)

    def check(self, case: tuple[str, bytes]) -> bool:
        how, payload = case
        answers = exchange(self.path, payload, how)
        ok = check_answers(answers)
        after = self.state()
        changed = diff(self.before, after)
        if changed and not ok and not any("result" in a for a in answers):
            raise Finding(f"refused request changed {', '.join(changed)}: {payload[:200]!r}")
        if changed:
            self.changed_by_success += 1
            self.accepted_log = (self.accepted_log + [payload[:300]])[-10:]
        self.before = after
        return ok
