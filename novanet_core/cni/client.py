"""The reference CNI client: what ``novanet-cni`` does, in Python, a thin client of the agent's CNI socket.

It validates the environment and the config, forwards the request to the agent, and prints the
spec's JSON (the agent renders results at the requested version: ``versions.py``). It never
changes the node itself, so an old binary keeps working with a newer agent.

The binary a node's runtime executes is the static C program ``cni/novanet-cni.c`` (it needs no
Python on the host); this module is the reference it is tested against (the same conformance
suite runs both) and the ``novanet-cni`` console script of the Python installation.

The runtime execs this once per pod operation, so imports are kept to C modules and three small
NovaNet modules (no ``json``, ``socket``, ``re``, ``typing``): with the ``-I -S`` launcher that
``novanet install-cni`` writes, start-up is close to the bare interpreter's. The wire format is the
local API's (docs/architecture.md), spoken directly over ``_socket``.
"""

from __future__ import annotations

import _socket
import posix
import sys

from novanet_core.cni import minijson
from novanet_core.cni.protocol import (
    DEFAULT_AGENT_SOCKET,
    DEFAULT_AGENT_TIMEOUT,
    ERR_DECODE,
    ERR_INTERNAL,
    ERR_INVALID_CONFIG,
    ERR_IO,
    ERR_NOT_AVAILABLE,
    ERR_TRY_AGAIN_LATER,
    MAX_CONFIG_BYTES,
    SPEC_VERSION,
    SUPPORTED_VERSIONS,
    CniError,
    validate_config,
    validate_env,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

API_VERSION = 1  # novanet_core.api.protocol.VERSION (not imported: it would pull in json)
# Local API refusals that mean "not now" (novanet_core.api.server): CNI code 11.
_BUSY = ("rate_limited", "too_many_connections")


class Unreachable(Exception):
    pass


class AgentError(Exception):
    def __init__(self, code: str, message: str, details: Any):
        super().__init__(message)
        self.code, self.message, self.details = code, message, details


def call_agent(path: str, method: str, params: dict[str, Any], timeout: float = DEFAULT_AGENT_TIMEOUT) -> Any:
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        try:
            s.connect(path)
        except OSError as e:
            raise Unreachable(f"cannot connect to {path}: {_why(e)}") from None
        req = {"v": API_VERSION, "id": 1, "method": method, "params": params}
        try:
            s.sendall(minijson.dumps(req).encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    raise Unreachable(f"{path}: connection closed by the agent")
                buf += chunk
                if len(buf) > MAX_CONFIG_BYTES:
                    raise Unreachable(f"{path}: answer longer than {MAX_CONFIG_BYTES} bytes")
        except OSError as e:
            raise Unreachable(f"{path}: {_why(e)}") from None
    finally:
        s.close()
    try:
        resp = minijson.loads(buf.decode())
    except (ValueError, RecursionError):
        resp = None
    if not isinstance(resp, dict):
        raise CniError(ERR_INTERNAL, "the agent's answer is not a JSON object")
    if "error" in resp:
        e = resp["error"] if isinstance(resp["error"], dict) else {}
        msg = e.get("message", "")
        raise AgentError(e.get("code", "error"), msg if isinstance(msg, str) else "", e.get("details"))
    return resp.get("result")


def _why(e: OSError) -> str:
    # A timeout has no errno (str() is "timed out"); the C client says the same for EAGAIN.
    return e.strerror or str(e)


def _pending_del(sock: str, req: dict[str, Any], params: dict[str, Any]) -> None:
    d = sock.rsplit("/", 1)[0] + "/pending-del"
    path = f"{d}/{req['containerID']}_{req['ifname']}.json"
    try:
        try:
            posix.mkdir(d, 0o700)
        except FileExistsError:
            pass
        fd = posix.open(path, posix.O_WRONLY | posix.O_CREAT | posix.O_TRUNC, 0o600)
        try:
            posix.write(fd, minijson.dumps(params).encode())
        finally:
            posix.close(fd)
    except OSError as e:
        # Without the tombstone the DEL would be lost: fail it, so that the runtime retries.
        raise CniError(ERR_IO, f"agent not reachable and the deferred DEL could not be recorded in {d}: "
                       f"{e.strerror or e}") from None


def run(env: dict[str, str], stdin: str | None) -> tuple[int, dict[str, Any] | None]:
    """Execute one CNI command; returns (exit code, JSON to print or None). ``stdin`` None: not UTF-8."""
    cmd = env.get("CNI_COMMAND", "")
    version = SPEC_VERSION
    try:
        req = validate_env(env)
        if cmd == "VERSION":
            try:
                conf = minijson.loads(stdin) if stdin and stdin.strip() else {}
            except (ValueError, RecursionError):
                conf = {}
            v = conf.get("cniVersion") if isinstance(conf, dict) else None
            return 0, {"cniVersion": v if v in SUPPORTED_VERSIONS else SPEC_VERSION, "supportedVersions": SUPPORTED_VERSIONS}
        if stdin is None:
            raise CniError(ERR_DECODE, "network configuration on stdin is not valid JSON: not UTF-8")
        if len(stdin) > MAX_CONFIG_BYTES:
            raise CniError(ERR_INVALID_CONFIG, f"network configuration on stdin is larger than {MAX_CONFIG_BYTES} bytes")
        try:
            conf = minijson.loads(stdin)
        except (ValueError, RecursionError) as e:  # RecursionError: nested deeper than Python can
            raise CniError(ERR_DECODE, f"network configuration on stdin is not valid JSON: {e}") from None
        if isinstance(conf, dict) and conf.get("cniVersion") in SUPPORTED_VERSIONS:
            version = conf["cniVersion"]
        conf = validate_config(conf, cmd)
        sock = conf.get("agentSocket", DEFAULT_AGENT_SOCKET)
        params = {**req, "config": conf}
        try:
            res = call_agent(sock, f"cni.{cmd.lower()}", params, conf.get("agentTimeout", DEFAULT_AGENT_TIMEOUT))
        except Unreachable as e:
            if cmd == "DEL":
                # Deferred delete (guide: "Pod deletion: Deferred (cleanup on reconcile)"): leave a
                # tombstone the agent processes on start, and let the runtime move on.
                _pending_del(sock, req, params)
                return 0, None
            if cmd == "STATUS":
                raise CniError(ERR_NOT_AVAILABLE, f"NovaNet agent not reachable: {e}") from None
            raise CniError(ERR_TRY_AGAIN_LATER, f"NovaNet agent not reachable, try again later: {e}") from None
        except AgentError as e:
            if e.code in _BUSY:  # the agent's API limits: the runtime retries later
                raise CniError(ERR_TRY_AGAIN_LATER, f"NovaNet agent busy, try again later: {e.message}") from None
            d = e.details if isinstance(e.details, dict) else {}
            code = d.get("cniCode")
            detail = d.get("detail", "")
            raise CniError(code if isinstance(code, int) and not isinstance(code, bool) else ERR_INTERNAL, e.message,
                           detail if isinstance(detail, str) else minijson.dumps(detail)) from None
        if cmd == "ADD":
            if not isinstance(res, dict):
                raise CniError(ERR_INTERNAL, "the agent's ADD answer has no result object")
            return 0, res
        return 0, None
    except CniError as e:
        return 1, e.to_json(version)


def main() -> None:
    env = {k.decode(errors="replace"): v.decode(errors="replace") for k, v in posix.environ.items()}
    try:
        raw = sys.stdin.buffer.read() if not sys.stdin.isatty() else b""
    except OSError:
        raw = b""
    try:
        stdin: str | None = raw.decode()
    except UnicodeDecodeError:
        stdin = None  # an error JSON (code 6), not a traceback
    code, out = run(env, stdin)
    if out is not None:
        sys.stdout.write(minijson.dumps(out) + "\n")
    sys.stdout.flush()
    sys.exit(code)


if __name__ == "__main__":
    main()
