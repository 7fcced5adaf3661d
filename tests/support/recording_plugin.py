"""A third-party-style plugin used by tests: appends every event hook call to a JSON-lines file.

Loaded into a real agent through ``NOVANET_PLUGINS=tests.support.recording_plugin`` with the file
named by ``NOVANET_TEST_HOOK_LOG``.
"""

from __future__ import annotations

import json
import os

from novanet_core.hookspecs import hookimpl


def _record(hook: str, **data: object) -> None:
    path = os.environ.get("NOVANET_TEST_HOOK_LOG")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"hook": hook, **data}, default=lambda o: o.__dict__) + "\n")


@hookimpl
def novanet_endpoint_added(endpoint):
    _record("novanet_endpoint_added", ip=endpoint.ip, pod=f"{endpoint.namespace}/{endpoint.pod}",
            identity=endpoint.identity)


@hookimpl
def novanet_endpoint_removed(endpoint):
    _record("novanet_endpoint_removed", ip=endpoint.ip, pod=f"{endpoint.namespace}/{endpoint.pod}")


@hookimpl
def novanet_nodes_changed(local, remotes):
    _record("novanet_nodes_changed", local=local.name, remotes=[[n.name, n.ip, n.pod_cidr] for n in remotes])
