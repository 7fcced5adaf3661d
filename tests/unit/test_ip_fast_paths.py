"""The IPv4 fast paths (``ipfamily.ipv4_packed`` and the state model's address field) answer exactly
what ``ipaddress`` does."""

from __future__ import annotations

import ipaddress

import pytest

from novanet_core.ipfamily import ipv4_packed
from novanet_core.state.fields import ObjectError, ip

CASES = [
    "10.0.0.1",
    "0.0.0.0",
    "255.255.255.255",
    "010.0.0.1",
    "10.0.0.01",
    "10.0.0",
    "10.0.0.1.2",
    "10.0.0.256",
    " 10.0.0.1",
    "10.0.0.1 ",
    "1e1.0.0.1",
    "10.0.0.1\x00",
    "fd00::1",
    "FD00:0::1",
    "::ffff:10.0.0.1",
    "fe80::1%eth0",
    "not-an-ip",
    "",
    "１０.0.0.1",
]


@pytest.mark.parametrize("v", CASES)
def test_ip_agrees_with_ipaddress(v: str) -> None:
    try:
        want: str | None = str(ipaddress.ip_address(v)) if v else None
    except ValueError:
        want = "error"
    try:
        got = ip("Pod", "p", "status.podIP", v)
    except ObjectError as e:
        assert e.path == "status.podIP"
        got = "error"
    assert got == want


@pytest.mark.parametrize("v", [*CASES, 167772161, None, b"10.0.0.1"])
def test_ipv4_packed_agrees_with_ipv4address(v: object) -> None:
    try:
        want = ipaddress.IPv4Address(v).packed if isinstance(v, str) else None
    except ValueError:
        want = None
    assert ipv4_packed(v) == want
