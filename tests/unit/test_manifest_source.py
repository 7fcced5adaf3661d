"""The local-manifest state source: snapshot, watch events, versions, and bad files kept harmless."""

from __future__ import annotations

import threading

from novanet_core.state.manifests import ManifestSource


def pod(name, labels, ns="x"):
    return f"kind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {labels}}}\nspec: {{nodeName: n1}}\n"


def collect(src, stop_after):
    stop = threading.Event()
    out = []
    for ev in src.watch(stop):
        out.append(ev)
        if ev.type == "SYNCED":
            stop.set()
        if len(out) >= stop_after:
            stop.set()
    return out


def test_snapshot_and_watch(tmp_path):
    (tmp_path / "a.yaml").write_text(pod("a", "{app: web}") + "---\nkind: Namespace\nmetadata: {name: x, labels: {ns: x}}\n")
    (tmp_path / "VERSION").write_text("3")
    src = ManifestSource(tmp_path, poll_interval=0.01)
    st = src.snapshot()
    assert st.version == 3 and st.pods["x/a"].labels == {"app": "web"} and st.namespaces["x"].labels == {"ns": "x"}
    (tmp_path / "a.yaml").write_text(pod("a", "{app: db}") + "---\nkind: Namespace\nmetadata: {name: x, labels: {ns: x}}\n")
    (tmp_path / "b.yaml").write_text(pod("b", "{app: web}"))
    (tmp_path / "VERSION").write_text("4")
    evs = collect(src, 10)
    kinds = {(e.type, e.obj.key if e.obj else None) for e in evs}
    assert ("MODIFIED", "x/a") in kinds and ("ADDED", "x/b") in kinds
    assert evs[-1].type == "SYNCED" and evs[-1].version == 4
    (tmp_path / "b.yaml").unlink()
    evs = collect(src, 10)
    assert ("DELETED", "x/b") in {(e.type, e.obj.key if e.obj else None) for e in evs}


def test_a_broken_edit_keeps_the_objects_that_were_fine(tmp_path):
    (tmp_path / "a.yaml").write_text(pod("a", "{app: web}"))
    src = ManifestSource(tmp_path, poll_interval=0.01)
    src.snapshot()
    (tmp_path / "a.yaml").write_text("kind: Pod\nmetadata: {name: a, namespace: x\n")  # YAML error
    evs = collect(src, 5)
    assert [e.type for e in evs] == ["SYNCED"]
    assert any("not valid YAML" in m for m in src.errors)
    # A field error in one object: that object keeps its old version, others still apply.
    (tmp_path / "a.yaml").write_text(
        "kind: Pod\nmetadata: {name: a, namespace: x}\nspec: {containers: [{ports: [{containerPort: 99999}]}]}\n---\n"
        + pod("c", "{app: new}"))
    evs = collect(src, 5)
    assert {(e.type, e.obj.key) for e in evs if e.obj} == {("ADDED", "x/c")}
    assert any("spec.containers[0].ports[0].containerPort" in m for m in src.errors)
