"""``novanet-cni``: the CNI plugin binary, a thin client of the agent's CNI socket.

It validates the environment and the config, forwards the request to the agent, and prints the
spec's JSON. It never changes the node itself, so an old binary keeps working with a newer agent.

The runtime execs this once per pod operation, so imports are kept to C modules and two small
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
    ERR_DECODE,
    ERR_INTERNAL,
    ERR_NOT_AVAILABLE,
    ERR_TRY_AGAIN_LATER,
    SPEC_VERSION,
    SUPPORTED_VERSIONS,
    CniError,
    format_result,
    validate_config,
    validate_env,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

API_VERSION = 1  # novanet_core.api.protocol.VERSION (not imported: it would pull in json)


class Unreachable(Exception):
    pass


class AgentError(Exception):
    def __init__(self, code: str, message: str, details: Any):
        super().__init__(message)
        self.code, self.message, self.details = code, message, details


def call_agent(path: str, method: str, params: dict[str, Any], timeout: float = 60.0) -> Any:
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        try:
            s.connect(path)
        except OSError as e:
            raise Unreachable(f"cannot connect to {path}: {e.strerror or e}") from None
        req = {"v": API_VERSION, "id": 1, "method": method, "params": params}
        try:
            s.sendall(minijson.dumps(req).encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    raise Unreachable(f"{path}: connection closed by the agent")
                buf += chunk
        except OSError as e:
            raise Unreachable(f"{path}: {e.strerror or e}") from None
    finally:
        s.close()
    resp = minijson.loads(buf.decode())
    if "error" in resp:
        e = resp["error"]
        raise AgentError(e.get("code", "error"), e.get("message", ""), e.get("details"))
    return resp.get("result")


def _pending_del(sock: str, req: dict[str, Any], params: dict[str, Any]) -> None:
    d = sock.rsplit("/", 1)[0] + "/pending-del"
    try:
        posix.mkdir(d, 0o700)
    except FileExistsError:
        pass
    path = f"{d}/{req['containerID']}_{req['ifname']}.json"
    fd = posix.open(path, posix.O_WRONLY | posix.O_CREAT | posix.O_TRUNC, 0o600)
    try:
        posix.write(fd, minijson.dumps(params).encode())
    finally:
        posix.close(fd)


def run(env: dict[str, str], stdin: str) -> tuple[int, dict[str, Any] | None]:
    """Execute one CNI command; returns (exit code, JSON to print or None)."""
    cmd = env.get("CNI_COMMAND", "")
    version = SPEC_VERSION
    try:
        req = validate_env(env)
        if cmd == "VERSION":
            try:
                conf = minijson.loads(stdin) if stdin.strip() else {}
            except ValueError:
                conf = {}
            v = conf.get("cniVersion") if isinstance(conf, dict) else None
            return 0, {"cniVersion": v if v in SUPPORTED_VERSIONS else SPEC_VERSION, "supportedVersions": SUPPORTED_VERSIONS}
        try:
            conf = minijson.loads(stdin)
        except ValueError as e:
            raise CniError(ERR_DECODE, f"network configuration on stdin is not valid JSON: {e}") from None
        if isinstance(conf, dict) and conf.get("cniVersion") in SUPPORTED_VERSIONS:
            version = conf["cniVersion"]
        conf = validate_config(conf, cmd)
        sock = conf.get("agentSocket", DEFAULT_AGENT_SOCKET)
        params = {**req, "config": conf}
        try:
            res = call_agent(sock, f"cni.{cmd.lower()}", params)
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
            d = e.details if isinstance(e.details, dict) else {}
            raise CniError(int(d.get("cniCode", ERR_INTERNAL)), e.message, str(d.get("detail", ""))) from None
        if cmd == "ADD":
            return 0, format_result(res, version)
        return 0, None
    except CniError as e:
        return 1, e.to_json(version)


def main() -> None:
    env = {k.decode(errors="replace"): v.decode(errors="replace") for k, v in posix.environ.items()}
    try:
        stdin = sys.stdin.read() if not sys.stdin.isatty() else ""
    except OSError:
        stdin = ""
    code, out = run(env, stdin)
    if out is not None:
        sys.stdout.write(minijson.dumps(out) + "\n")
    sys.stdout.flush()
    sys.exit(code)


if __name__ == "__main__":
    main()
