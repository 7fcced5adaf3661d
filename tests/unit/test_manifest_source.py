"""The local-manifest state source: snapshot, watch events, versions, and bad files kept harmless."""

from __future__ import annotations

import os
import random
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


def writer_runs_after_first(monkeypatch, tmp_path, method: str) -> None:
    """The writer (lab apply: b.yaml, then VERSION 2) runs right after the source's first call of
    ``method`` (``_read_version`` or ``_signature``): one interleaving of a real race, made exact."""
    real = getattr(ManifestSource, method)
    raced = []

    def then_writer(self):
        out = real(self)
        if not raced:
            raced.append(True)
            (tmp_path / "b.yaml").write_text(pod("b", "{app: web}"))
            (tmp_path / "VERSION").write_text("2")
        return out

    monkeypatch.setattr(ManifestSource, method, then_writer)


def watch_until_version(src, version, timeout=10.0):
    """Every event up to the first SYNCED at ``version`` or later (or until ``timeout``)."""
    stop = threading.Event()
    timer = threading.Timer(timeout, stop.set)
    timer.start()
    out = []
    for ev in src.watch(stop):
        out.append(ev)
        if ev.type == "SYNCED" and ev.version >= version:
            stop.set()
    timer.cancel()
    return out


def started_at_version_1(tmp_path):
    (tmp_path / "a.yaml").write_text(pod("a", "{app: web}"))
    (tmp_path / "VERSION").write_text("1")
    src = ManifestSource(tmp_path, poll_interval=0.01)
    assert src.snapshot().version == 1
    return src


def test_version_reported_never_runs_ahead_of_the_files_it_covers(tmp_path, monkeypatch):
    # The writer runs while the source is in the middle of a scan: the scan missed b.yaml, so
    # that pass must not report version 2.
    src = started_at_version_1(tmp_path)
    (tmp_path / "c.yaml").write_text(pod("c", "{app: web}"))  # what the racing scan does see
    writer_runs_after_first(monkeypatch, tmp_path, "_signature")
    evs = watch_until_version(src, 2)
    assert evs and evs[-1].type == "SYNCED" and evs[-1].version == 2, evs
    assert {e.obj.key for e in evs if e.obj} == {"x/b", "x/c"}  # x/b came before version 2 did


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
    # The other interleaving: files and VERSION both land after the source read VERSION but
    # before it scanned. That pass loads the files and reports the old version; the next pass has
    # no file left to load and must still report the new one (lab apply waits on it).
    src = started_at_version_1(tmp_path)
    writer_runs_after_first(monkeypatch, tmp_path, "_read_version")
    evs = watch_until_version(src, 2)
    assert [e.version for e in evs if e.type == "SYNCED"] == [1, 2]
    assert [e.obj.key for e in evs if e.obj] == ["x/b"]


SERVICE = """kind: Service
metadata: {name: web, namespace: x}
spec: {selector: {app: web}, ports: [{name: http, port: 80, targetPort: http}]}
---
kind: EndpointSlice
metadata: {name: web-1, namespace: x, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: [{addresses: [10.42.0.5], nodeName: n1}]
"""


def test_services_and_endpointslices_and_a_bad_service_edit(tmp_path):
    (tmp_path / "svc.yaml").write_text(SERVICE)
    src = ManifestSource(tmp_path, poll_interval=0.01)
    st = src.snapshot()
    assert st.services["x/web"].ports[0].target_port == "http"
    assert st.endpointslices["x/web-1"].endpoints[0].addresses == ("10.42.0.5",)
    # A bad edit of the Service is reported by field path; the Service it replaced stays, the slice's edit applies.
    (tmp_path / "svc.yaml").write_text(SERVICE.replace("port: 80,", "port: 80, nodePort: 30080,")
                                       .replace("10.42.0.5", "10.42.0.6"))
    evs = collect(src, 5)
    assert [(e.type, e.kind) for e in evs] == [("MODIFIED", "EndpointSlice"), ("SYNCED", "")]
    assert any("Service web: spec.ports[0].nodePort: may not be used when type is 'ClusterIP'" in m for m in src.errors)


def test_incremental_diff_matches_a_fresh_read_after_every_change(tmp_path):
    """Only the files that changed are diffed: after random edits, moves of an object between
    files (the later file in name order wins) and removals of files, the state the events build
    equals what a fresh source reads from the directory."""
    rng = random.Random(21)
    files = ["a.yaml", "b.yaml", "c.yaml"]
    src = ManifestSource(tmp_path, poll_interval=0.01)
    st = src.snapshot()
    for step in range(40):
        name = rng.choice(files)
        if rng.random() < 0.2:
            (tmp_path / name).unlink(missing_ok=True)
        else:
            docs = [pod(f"p{i}", f"{{app: v{rng.randrange(3)}}}") for i in rng.sample(range(6), rng.randint(0, 4))]
            tmp = tmp_path / f".{name}.tmp"
            tmp.write_text("---\n".join(docs))
            os.rename(tmp, tmp_path / name)  # a new inode: seen even within one timestamp tick
        (tmp_path / "VERSION").write_text(str(step + 1))
        for ev in watch_until_version(src, step + 1):
            st.apply(ev)
        fresh = ManifestSource(tmp_path).snapshot()
        assert {k: p.labels for k, p in st.pods.items()} == {k: p.labels for k, p in fresh.pods.items()}, step
