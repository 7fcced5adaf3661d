"""``novanet-cni``: the CNI plugin binary, a thin client of the agent's CNI socket.

It validates the environment and the config, forwards the request to the agent, and prints the
spec's JSON. It never changes the node itself, so an old binary keeps working with a newer agent.
Imports are kept to the stdlib and two small NovaNet modules: this runs once per pod operation.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from novanet_core.api.client import ApiClient, Unreachable
from novanet_core.api.protocol import ApiError
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


def _pending_del_dir(sock: str) -> str:
    return os.path.join(os.path.dirname(sock), "pending-del")


def run(env: dict[str, str], stdin: str) -> tuple[int, dict[str, Any] | None]:
    """Execute one CNI command; returns (exit code, JSON to print or None)."""
    cmd = env.get("CNI_COMMAND", "")
    version = SPEC_VERSION
    try:
        req = validate_env(env)
        if cmd == "VERSION":
            try:
                conf = json.loads(stdin) if stdin.strip() else {}
            except ValueError:
                conf = {}
            v = conf.get("cniVersion") if isinstance(conf, dict) else None
            return 0, {"cniVersion": v if v in SUPPORTED_VERSIONS else SPEC_VERSION, "supportedVersions": SUPPORTED_VERSIONS}
        try:
            conf = json.loads(stdin)
        except ValueError as e:
            raise CniError(ERR_DECODE, f"network configuration on stdin is not valid JSON: {e}") from None
        if isinstance(conf, dict) and conf.get("cniVersion") in SUPPORTED_VERSIONS:
            version = conf["cniVersion"]
        conf = validate_config(conf, cmd)
        sock = conf.get("agentSocket", DEFAULT_AGENT_SOCKET)
        params = {**req, "config": conf}
        try:
            with ApiClient(sock, timeout=60) as c:
                res = c.call(f"cni.{cmd.lower()}", params)
        except Unreachable as e:
            if cmd == "DEL":
                # Deferred delete (guide: "Pod deletion: Deferred (cleanup on reconcile)"): leave a
                # tombstone the agent processes on start, and let the runtime move on.
                d = _pending_del_dir(sock)
                os.makedirs(d, exist_ok=True)
                with open(os.path.join(d, f"{req['containerID']}_{req['ifname']}.json"), "w") as f:
                    json.dump(params, f)
                return 0, None
            if cmd == "STATUS":
                raise CniError(ERR_NOT_AVAILABLE, f"NovaNet agent not reachable: {e}") from None
            raise CniError(ERR_TRY_AGAIN_LATER, f"NovaNet agent not reachable, try again later: {e}") from None
        except ApiError as e:
            d = e.details if isinstance(e.details, dict) else {}
            raise CniError(int(d.get("cniCode", ERR_INTERNAL)), e.message, str(d.get("detail", ""))) from None
        if cmd == "ADD":
            return 0, format_result(res, version)
        return 0, None
    except CniError as e:
        return 1, e.to_json(version)


def main() -> None:
    try:
        stdin = sys.stdin.read() if not sys.stdin.isatty() else ""
    except OSError:
        stdin = ""
    code, out = run(dict(os.environ), stdin)
    if out is not None:
        sys.stdout.write(json.dumps(out) + "\n")
    sys.exit(code)


if __name__ == "__main__":
    main()
