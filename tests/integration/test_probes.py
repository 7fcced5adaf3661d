"""The kubelet's probes (the chart's readinessProbe/livenessProbe): /readyz follows the agent's ``ready``."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.support.node import NodeUnderTest

pytestmark = [pytest.mark.root, pytest.mark.netns]

PORT = 9103


def get(node: NodeUnderTest, path: str) -> tuple[int, str]:
    code = ("import urllib.request, urllib.error, sys\n"
            f"try:\n r = urllib.request.urlopen('http://127.0.0.1:{PORT}{path}', timeout=5); print(r.status); print(r.read().decode())\n"
            "except urllib.error.HTTPError as e:\n print(e.code); print(e.read().decode())\n")
    out = subprocess.run(["nsenter", f"--net=/run/netns/{node.ns}", sys.executable, "-c", code],
                         capture_output=True, text=True, timeout=30).stdout
    status, _, body = out.partition("\n")
    return int(status), body


@pytest.fixture
def node():
    n = NodeUnderTest(datapath="kernel", extra={"metrics": {"address": f"127.0.0.1:{PORT}"}})
    try:
        n.start()
        yield n
    finally:
        n.close()


def test_readyz_follows_ready_and_metrics_stay_served(node):
    assert get(node, "/readyz") == (200, "ready\n\n")  # body, then print()s newline
    assert get(node, "/healthz")[0] == 200
    status, body = get(node, "/metrics")
    assert status == 200 and "\nnovanet_agent_endpoints " in body  # a gauge: no _total (docs/metrics.md)
    node.kill("dataplane")
    deadline = time.monotonic() + 30
    while (r := get(node, "/readyz"))[0] != 503:
        assert time.monotonic() < deadline, f"/readyz still {r} with the dataplane gone"
        time.sleep(0.2)
    assert "not ready" in r[1] and '"dataplaneConnected": false' in r[1]
    assert get(node, "/healthz")[0] == 200  # alive, only not ready: the kubelet must not restart it
    node.restart("dataplane")
    node.wait_ready()
    assert get(node, "/readyz")[0] == 200
