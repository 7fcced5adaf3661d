"""CNI 1.1 protocol rules shared by the client binary and the agent.

Imported by the Python ``novanet-cni`` on every pod operation, so it imports nothing but
``versions`` (no ``re``). The C client (``cni/novanet-cni.c``) implements the same rules with the
same messages; ``tests/integration/test_cni_conformance.py`` runs both.

Error codes (CNI spec): 1 incompatible version, 2 unsupported field, 3 container unknown,
4 invalid environment variables, 5 I/O failure, 6 decode failure, 7 invalid network config,
11 try again later, 50/51 from STATUS, 100+ plugin specific (NovaNet's are listed below and
in docs/cni.md).
"""

from __future__ import annotations

from novanet_core.cni.versions import SPEC_VERSION, SUPPORTED_VERSIONS, version_tuple

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing itself is a measurable import for a binary exec'd per pod operation
    from typing import Any

DEFAULT_AGENT_SOCKET = "/run/novanet/cni.sock"

ERR_INCOMPATIBLE_VERSION = 1
ERR_UNSUPPORTED_FIELD = 2
ERR_UNKNOWN_CONTAINER = 3
ERR_INVALID_ENV = 4
ERR_IO = 5
ERR_DECODE = 6
ERR_INVALID_CONFIG = 7
ERR_TRY_AGAIN_LATER = 11
ERR_NOT_AVAILABLE = 50
ERR_LIMITED_CONNECTIVITY = 51
# NovaNet plugin-specific codes
ERR_INTERNAL = 100
ERR_NETNS = 101  # the pod network namespace is missing or unusable
ERR_INTERFACE = 102  # creating/configuring the interface failed
ERR_DATAPATH = 103  # the dataplane refused or is unreachable
ERR_CHECK_FAILED = 104  # CHECK found a difference
ERR_IPAM = 105
ERR_IPAM_EXHAUSTED = 110

DEFAULT_AGENT_TIMEOUT = 60.0  # seconds per socket operation (connect, send, each receive)
MAX_CONFIG_BYTES = 16 * 1024 * 1024  # the agent's line limit (api/protocol.py MAX_LINE)
# The first spec version that has the command (libcni's skel refuses older configs the same way).
MIN_VERSION = {"CHECK": (0, 4, 0), "STATUS": (1, 1, 0), "GC": (1, 1, 0)}

COMMANDS = ("ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC")
_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_ID_CHARS = _ALNUM | frozenset("_.-")


def valid_container_id(cid: str) -> bool:
    r"""The spec's ``^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$``."""
    return bool(cid) and cid[0] in _ALNUM and all(c in _ID_CHARS for c in cid)


class CniError(Exception):
    def __init__(self, code: int, msg: str, details: str = ""):
        super().__init__(msg)
        self.code, self.msg, self.details = code, msg, details

    def to_json(self, cni_version: str = SPEC_VERSION) -> dict[str, Any]:
        d: dict[str, Any] = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            d["details"] = self.details
        return d


def validate_env(env: dict[str, str]) -> dict[str, Any]:
    """Check the CNI_* variables for the command; returns the parsed request."""
    cmd = env.get("CNI_COMMAND", "")
    if cmd not in COMMANDS:
        raise CniError(ERR_INVALID_ENV, f"CNI_COMMAND must be one of {', '.join(COMMANDS)}, got {cmd!a}")
    req: dict[str, Any] = {"command": cmd}
    if cmd in ("ADD", "DEL", "CHECK"):
        needed = ["CNI_CONTAINERID", "CNI_IFNAME"] + (["CNI_NETNS"] if cmd != "DEL" else [])
        missing = [k for k in needed if not env.get(k)]
        if missing:
            raise CniError(ERR_INVALID_ENV, f"required environment variable(s) missing for {cmd}: {', '.join(missing)}")
        cid = env["CNI_CONTAINERID"]
        if not valid_container_id(cid):
            raise CniError(ERR_INVALID_ENV, f"CNI_CONTAINERID {cid!a} must start with a letter or digit and contain only letters, digits, '_', '.', '-'")
        ifname = env["CNI_IFNAME"]
        if len(ifname) > 15 or ifname in (".", "..") or any(c in ifname for c in "/: \t\n"):
            raise CniError(ERR_INVALID_ENV, f"CNI_IFNAME {ifname!a} is not a valid interface name")
        req.update(containerID=cid, ifname=ifname, netns=env.get("CNI_NETNS", ""), args=parse_args(env.get("CNI_ARGS", "")))
    return req


def parse_args(raw: str) -> dict[str, str]:
    out = {}
    for part in filter(None, raw.split(";")):
        k, sep, v = part.partition("=")
        if not sep:
            raise CniError(ERR_INVALID_ENV, f"CNI_ARGS entry {part!a} is not KEY=VALUE")
        out[k] = v
    return out


def validate_config(conf: Any, command: str) -> dict[str, Any]:
    """Validate the network configuration the runtime passed on stdin."""
    if not isinstance(conf, dict):
        raise CniError(ERR_INVALID_CONFIG, "network configuration must be a JSON object")
    ver = conf.get("cniVersion")
    if not isinstance(ver, str) or not ver:
        raise CniError(ERR_INVALID_CONFIG, "cniVersion: required string missing")
    if ver not in SUPPORTED_VERSIONS:
        raise CniError(ERR_INCOMPATIBLE_VERSION, f"cniVersion {ver!a} is not supported",
                       details=f"supported versions: {', '.join(SUPPORTED_VERSIONS)}")
    if command == "VERSION":
        return conf
    if command in MIN_VERSION and version_tuple(ver) < MIN_VERSION[command]:
        raise CniError(ERR_INCOMPATIBLE_VERSION, f"config version {ver} does not allow {command}")
    for key in ("name", "type"):
        if not isinstance(conf.get(key), str) or not conf.get(key):
            raise CniError(ERR_INVALID_CONFIG, f"{key}: required string missing")
    sock = conf.get("agentSocket", DEFAULT_AGENT_SOCKET)
    if not isinstance(sock, str) or not sock.startswith("/") or "\x00" in sock:
        raise CniError(ERR_INVALID_CONFIG, "agentSocket: must be an absolute path to the agent's CNI socket")
    if "mtu" in conf and (isinstance(conf["mtu"], bool) or not isinstance(conf["mtu"], int) or not 576 <= conf["mtu"] <= 9000):
        raise CniError(ERR_INVALID_CONFIG, "mtu: must be an integer 576..9000")
    t = conf.get("agentTimeout", DEFAULT_AGENT_TIMEOUT)
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t <= 3600:
        raise CniError(ERR_INVALID_CONFIG, "agentTimeout: must be a number of seconds, 0 < agentTimeout <= 3600")
    if command == "CHECK" and not isinstance(conf.get("prevResult"), dict):
        raise CniError(ERR_INVALID_CONFIG, "prevResult: CHECK needs the result of the ADD")
    if command == "GC":
        va = conf.get("cni.dev/valid-attachments", [])
        if not isinstance(va, list) or not all(isinstance(a, dict) and isinstance(a.get("containerID"), str) for a in va):
            raise CniError(ERR_INVALID_CONFIG, "cni.dev/valid-attachments: must be a list of {containerID, ifname}")
    return conf


def validate_request(params: Any, method: str) -> dict[str, Any]:
    """The agent's check of a ``cni.<method>`` request from its socket: the same rules the client
    applies to the environment and stdin, on the request's fields (a caller of the socket need
    not be NovaNet's own client)."""
    cmd = method.upper()
    if not isinstance(params, dict):
        raise CniError(ERR_INVALID_ENV, "params: must be an object")
    conf = params.get("config", {})
    if cmd in ("ADD", "DEL", "CHECK"):
        for key in ("containerID", "ifname") + (("netns",) if cmd != "DEL" else ()):
            if not isinstance(params.get(key), str) or not params.get(key):
                raise CniError(ERR_INVALID_ENV, f"{key}: required string missing")
        if params.get("netns") is not None and not isinstance(params["netns"], str):
            raise CniError(ERR_INVALID_ENV, "netns: must be a string")
        env = {"CNI_COMMAND": cmd, "CNI_CONTAINERID": params["containerID"], "CNI_IFNAME": params["ifname"],
               "CNI_NETNS": params.get("netns") or ""}
        if cmd == "DEL":
            env.pop("CNI_NETNS")
        validate_env(env)
        args = params.get("args", {})
        if args is None:
            args = {}
        if not isinstance(args, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in args.items()):
            raise CniError(ERR_INVALID_ENV, "args: must be a map of string to string (CNI_ARGS)")
    if conf is None:
        conf = {}
    if not isinstance(conf, dict):
        raise CniError(ERR_INVALID_CONFIG, "config: network configuration must be a JSON object")
    if conf or cmd in ("CHECK", "GC"):
        validate_config(conf, cmd)
    if cmd == "CHECK" and "prevResult" in conf:
        ips = conf["prevResult"].get("ips", []) if isinstance(conf["prevResult"], dict) else None
        if not isinstance(ips, list) or not all(isinstance(i, dict) and isinstance(i.get("address", ""), str)
                                                for i in ips):
            raise CniError(ERR_INVALID_CONFIG, "prevResult.ips: must be a list of {address: CIDR string}")
    return params

