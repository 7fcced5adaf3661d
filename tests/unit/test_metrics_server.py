"""The metrics/probe HTTP server binds IPv4 and bracketed IPv6 addresses and starts without asking
the resolver anything (a node netns or pod may have no reachable resolver)."""

from __future__ import annotations

import socket
import urllib.request
from unittest import mock

import pytest
from prometheus_client import CollectorRegistry

from novanet_core import metrics


def _free_port(family: int, host: str) -> int:
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    ("family", "host", "url_host"),
    [(socket.AF_INET, "127.0.0.1", "127.0.0.1"), (socket.AF_INET6, "::1", "[::1]")],
)
def test_serves_each_family_without_a_name_lookup(family: int, host: str, url_host: str) -> None:
    port = _free_port(family, host)
    with (
        mock.patch("socket.getfqdn", side_effect=AssertionError("resolver asked")),
        mock.patch("socket.gethostbyaddr", side_effect=AssertionError("resolver asked")),
    ):
        assert metrics.serve(f"{url_host}:{port}", CollectorRegistry(), "dataplane") is True
    body = urllib.request.urlopen(f"http://{url_host}:{port}/healthz", timeout=10).read()
    assert body == b"ok\n"
