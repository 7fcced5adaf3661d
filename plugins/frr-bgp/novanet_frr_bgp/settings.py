"""``routing.settings`` for ``routing.type: frr-bgp``: the model, and errors that name the key.

Every error message starts with ``routing.settings.<key>`` so that a user sees which line of the
config to fix (``routing.settings.bfd.detectMultiplier: must be 2..255``).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from novanet_core.config.fielderrors import field_errors

PREFIX = "routing.settings"
# FRR's own limits: ASN is a u32 (0 is reserved); BFD intervals are 10..60000 ms.
MAX_ASN = 4294967295
_NO_SPACE = re.compile(r"^\S+$")
_PRINTABLE = re.compile(r"^[\x20-\x7e]*$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def _ip(v: str) -> str:
    try:
        return str(ipaddress.ip_address(v))  # the compressed form, as FRR prints it
    except (ValueError, TypeError):
        raise ValueError(f"{v!r} is not an IPv4 or IPv6 address") from None


def _free_text(v: str | None) -> str | None:
    # Text goes into one vtysh command line: a newline or control character would smuggle in
    # a second command.
    if v is not None and not _PRINTABLE.match(v):
        raise ValueError("must be printable ASCII without control characters")
    return v


class BfdSettings(_Model):
    enabled: bool = False
    receiveInterval: int = Field(default=300, ge=10, le=60000)
    transmitInterval: int = Field(default=300, ge=10, le=60000)
    detectMultiplier: int = Field(default=3, ge=2, le=255)


class GracefulRestartSettings(_Model):
    enabled: bool = True
    restartTime: int = Field(default=120, ge=1, le=4095)
    stalePathTime: int = Field(default=360, ge=1, le=4095)


class TimerSettings(_Model):
    keepalive: int = Field(default=3, ge=1, le=65535)
    hold: int = Field(default=9, ge=3, le=65535)


class PeerSettings(_Model):
    """An explicit BGP peer (a ToR switch, a route reflector)."""

    address: str
    asn: int = Field(ge=1, le=MAX_ASN)
    password: str | None = Field(default=None, min_length=1, max_length=80)
    description: str | None = Field(default=None, max_length=80)
    bfd: bool | None = None  # None: follow bfd.enabled
    ebgpMultihop: int | None = Field(default=None, ge=1, le=255)

    _addr = field_validator("address")(_ip)
    _desc = field_validator("description")(_free_text)

    @field_validator("password")
    @classmethod
    def _pw(cls, v: str | None) -> str | None:
        if v is not None and (not _NO_SPACE.match(v) or not _PRINTABLE.match(v)):
            raise ValueError("must be printable ASCII without spaces")
        return v


class FrrBgpSettings(_Model):
    # "auto": asnBase + third octet * 256 + fourth octet of the node IP (the original's formula),
    # so every node computes every other node's ASN from its IP alone.
    asn: int | Literal["auto"] = "auto"
    asnBase: int = Field(default=64512, ge=1, le=MAX_ASN - 65535)
    fullMesh: bool = True
    peers: list[PeerSettings] = Field(default_factory=list)
    bfd: BfdSettings = Field(default_factory=BfdSettings)
    gracefulRestart: GracefulRestartSettings = Field(default_factory=GracefulRestartSettings)
    timers: TimerSettings = Field(default_factory=TimerSettings)
    # How to reach FRR: vtysh's -N pathspace and/or --vty_socket directory.
    vtysh: str = "vtysh"
    pathspace: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$")
    vtySocket: str | None = None
    waitTimeout: float = Field(default=30.0, ge=0, le=600)
    reconcileInterval: float = Field(default=5.0, ge=0.2, le=3600)
    commandTimeout: float = Field(default=10.0, ge=0.5, le=120)
    # The guide: strict reverse-path filtering drops routed pod traffic; 0 = off, 2 = loose.
    rpFilter: Literal[0, 1, 2] | None = 0
    # A blackhole route for the local PodCIDR gives BGP's `network` a RIB entry and stops
    # packets to unallocated pod addresses from following a default route out again.
    blackholeRoute: bool = True
    bfdProfile: str = Field(default="novanet", pattern=r"^[A-Za-z0-9_-]{1,32}$")

    @field_validator("asn")
    @classmethod
    def _asn(cls, v: int | str) -> int | str:
        if isinstance(v, int) and not 1 <= v <= MAX_ASN:
            raise ValueError(f"must be 'auto' or 1..{MAX_ASN}")
        return v

    @model_validator(mode="after")
    def _cross(self) -> FrrBgpSettings:
        if self.timers.hold < 3 * self.timers.keepalive and self.timers.hold != 0:
            raise ValueError("timers.hold: must be at least 3 × timers.keepalive")
        seen: set[str] = set()
        for i, p in enumerate(self.peers):
            if p.address in seen:
                raise ValueError(f"peers[{i}].address: {p.address} is listed twice")
            seen.add(p.address)
        return self


def _loc(loc: tuple[Any, ...]) -> str:
    out = PREFIX
    for p in loc:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out


def parse_settings(raw: dict[str, Any] | None) -> tuple[FrrBgpSettings | None, list[str]]:
    """The settings, or ``(None, errors)`` with every error naming its key."""
    try:
        return FrrBgpSettings.model_validate(raw or {}), []
    except ValidationError as e:
        errors = []
        for loc, msg in field_errors(e):
            if not loc and ": " in msg:  # _cross: the message carries its own key path
                key, _, msg = msg.partition(": ")
                errors.append(f"{PREFIX}.{key}: {msg}")
            else:
                errors.append(f"{_loc(loc)}: {msg}")
        return None, errors


def settings_or_raise(raw: dict[str, Any] | None) -> FrrBgpSettings:
    from novanet_core.backends import ConfigError

    s, errors = parse_settings(raw)
    if s is None:
        raise ConfigError("; ".join(errors))
    return s
