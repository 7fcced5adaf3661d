"""Plugin API versions in a real agent: an out-of-tree plugin that needs a newer API is refused
at start-up, naming both versions, and the node runs on the plugins that fit."""

from __future__ import annotations

import uuid

import pytest

from novanet_core.api.protocol import ApiError
from novanet_core.hookspecs import PLUGIN_API_VERSION
from tests.support.node import NodeUnderTest

pytestmark = [pytest.mark.root, pytest.mark.netns]

PLUGIN = '''
from novanet_core.hookspecs import hookimpl

NOVANET_PLUGIN_API = {spec!r}


@hookimpl
def novanet_register_api(router, component):
    if component == "agent":
        router.add("{name}.hello", lambda params: {{"from": "{name}"}})
'''


def test_an_incompatible_plugin_is_refused_and_the_node_keeps_running(tmp_path, monkeypatch):
    tag = uuid.uuid4().hex[:8]
    future, fitting = f"nvt_future_{tag}", f"nvt_fitting_{tag}"
    (tmp_path / f"{future}.py").write_text(PLUGIN.format(spec=">=2.0", name=future))
    (tmp_path / f"{fitting}.py").write_text(PLUGIN.format(spec=">=1.0,<2", name=fitting))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setenv("NOVANET_PLUGINS", f"{future},{fitting}")
    node = NodeUnderTest(datapath="kernel")
    try:
        node.start()
        assert node.call(f"{fitting}.hello") == {"from": fitting}
        with pytest.raises(ApiError) as e:
            node.call(f"{future}.hello")
        assert e.value.code == "unknown_method"
        plugins = {p["name"]: p for p in node.call("plugins.list")}
        assert plugins[fitting]["active"] is True and "error" not in plugins[fitting]
        want = (f"plugin {future!r} supports NovaNet plugin API >=2.0, but this NovaNet provides plugin API "
                f"{PLUGIN_API_VERSION}: not loaded")
        assert plugins[future]["error"] == want
        assert want in node.log("agent")
        assert node.call("status")["ready"] is True
    finally:
        node.close()
