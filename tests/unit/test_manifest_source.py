"""The local-manifest state source: snapshot, watch events, versions, and bad files kept harmless."""

from __future__ import annotations

import os
import threading

from novanet_core.state.manifests import ManifestSource


def pod(name, labels, ns="x"):
    return f"kind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {labels}}}\nspec: {{nodeName: n1}}\n"


def collect(src, stop_after, timeout=10.0):
    stop = threading.Event()
    timer = threading.Timer(timeout, stop.set)  # a change the source never notices ends the wait
    timer.start()
    out = []
    for ev in src.watch(stop):
        out.append(ev)
        if ev.type == "SYNCED":
            stop.set()
        if len(out) >= stop_after:
            stop.set()
    timer.cancel()
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


def test_version_reported_never_runs_ahead_of_the_files_it_covers(tmp_path, monkeypatch):
    # A writer (lab apply) writes its files, then bumps VERSION. Here it does so while the source
    # is in the middle of a scan: the scan missed b.yaml, so that pass must not report version 2.
    (tmp_path / "a.yaml").write_text(pod("a", "{app: web}"))
    (tmp_path / "VERSION").write_text("1")
    src = ManifestSource(tmp_path, poll_interval=0.01)
    assert src.snapshot().version == 1
    real = ManifestSource._signature
    raced = []

    def scan_then_writer_runs(self):
        sig = real(self)
        if not raced:
            raced.append(True)
            (tmp_path / "b.yaml").write_text(pod("b", "{app: web}"))
            (tmp_path / "VERSION").write_text("2")
        return sig

    (tmp_path / "c.yaml").write_text(pod("c", "{app: web}"))  # what the racing scan does see
    monkeypatch.setattr(ManifestSource, "_signature", scan_then_writer_runs)
    seen: set[str] = set()
    stop = threading.Event()
    timer = threading.Timer(10, stop.set)
    timer.start()
    for ev in src.watch(stop):
        if ev.obj is not None:
            seen.add(ev.obj.key)
        elif ev.version >= 2:
            assert "x/b" in seen, f"version {ev.version} reported before x/b was read"
            stop.set()
    timer.cancel()
    assert seen == {"x/b", "x/c"}


def test_same_size_rewrite_by_rename_is_seen(tmp_path):
    (tmp_path / "a.yaml").write_text(pod("a", "{app: web}"))
    src = ManifestSource(tmp_path, poll_interval=0.01)
    src.snapshot()
    before = (tmp_path / "a.yaml").stat()
    tmp = tmp_path / ".a.yaml.tmp"
    tmp.write_text(pod("a", "{app: dbx}"))
    assert tmp.stat().st_size == before.st_size
    os.utime(tmp, ns=(before.st_atime_ns, before.st_mtime_ns))  # the same timestamp tick
    os.rename(tmp, tmp_path / "a.yaml")
    evs = collect(src, 5)
    assert [(e.type, e.obj.labels) for e in evs if e.obj] == [("MODIFIED", {"app": "dbx"})]


def test_version_bumped_between_its_read_and_the_scan_is_still_reported(tmp_path, monkeypatch):
    # The other interleaving: the writer's files and VERSION both land after the source read
    # VERSION but before it scanned. That pass loads the files and reports the old version; the
    # next pass has no file left to load and must still report the new version (lab apply waits on it).
    (tmp_path / "a.yaml").write_text(pod("a", "{app: web}"))
    (tmp_path / "VERSION").write_text("1")
    src = ManifestSource(tmp_path, poll_interval=0.01)
    assert src.snapshot().version == 1
    real = ManifestSource._read_version
    raced = []

    def read_then_writer_runs(self):
        v = real(self)
        if not raced:
            raced.append(True)
            (tmp_path / "b.yaml").write_text(pod("b", "{app: web}"))
            (tmp_path / "VERSION").write_text("2")
        return v

    monkeypatch.setattr(ManifestSource, "_read_version", read_then_writer_runs)
    versions = []
    stop = threading.Event()
    timer = threading.Timer(10, stop.set)
    timer.start()
    for ev in src.watch(stop):
        if ev.type == "SYNCED":
            versions.append(ev.version)
            if ev.version >= 2:
                stop.set()
    timer.cancel()
    assert versions == [1, 2]
