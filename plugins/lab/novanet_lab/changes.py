"""``lab apply -f`` and ``lab delete -f``: change a running lab the way kubectl changes a cluster.

Order matters for the agents: objects are written to the manifest directory and VERSION bumped,
then every agent must report that version before new pods get their CNI ADD (the agent needs the
pod's labels for its identity), and once more at the end, so ``apply`` returns only after every
agent has taken the whole change in.
"""

from __future__ import annotations

import time
from typing import Any

from novanet_core.state.model import ObjectError
from novanet_lab import agents, netns, pods
from novanet_lab import state as lstate
from novanet_lab.errors import LabError
from novanet_lab.lifecycle import Progress, _quiet, create_pods, lab_lock
from novanet_lab.manifests import ManifestWriter, namespace_object
from novanet_lab.paths import LabPaths
from novanet_lab.resources import Resource
from novanet_lab.services import objects as service_objects
from novanet_lab.services import reconcile
from novanet_lab.state import LabState, PodState, PortState

ORDER = ("Namespace", "Service", "Pod", "NetworkPolicy", "EndpointSlice")
PLURAL = {"NetworkPolicy": "networkpolicies", "EndpointSlice": "endpointslices", "Service": "services"}


def load_running(lab: str) -> tuple[LabPaths, LabState]:
    paths = LabPaths(lab)
    st = lstate.load(paths)
    if st is None:
        raise LabError(f"lab {lab} is not up (no {paths.state_file}); start it with `novanet lab up --spec FILE`")
    if st.phase != "up":
        raise LabError(f"lab {lab} is in phase {st.phase!r}, not up (a failed `lab up`? run `novanet lab down --name {lab}`)")
    return paths, st


def apply(lab: str, resources: list[Resource], timeout: float = 60.0, progress: Progress = _quiet) -> list[str]:
    """Create or update objects; returns kubectl-style lines (``pod/x/a created``)."""
    paths, _ = load_running(lab)
    with lab_lock(paths):
        st = lstate.load(paths)
        assert st is not None
        return _apply(paths, st, resources, timeout, progress)


def _check_refs(st: LabState, resources: list[Resource]) -> None:
    new_ns = {r.name for r in resources if r.kind == "Namespace"}
    problems = []
    for r in resources:
        if r.namespace is not None and r.namespace not in st.namespaces and r.namespace not in new_ns:
            problems.append(f"{r.describe()}: metadata.namespace: namespace {r.namespace!r} does not exist")
        if r.kind != "Pod":
            continue
        if r.node is not None and r.node not in st.nodes:
            problems.append(f"{r.describe()}: spec.nodeName: {r.node!r} is not a lab node ({', '.join(st.nodes)})")
        old = st.pods.get(r.key)
        if old is not None and r.node is not None and r.node != old.node:
            problems.append(f"{r.describe()}: spec.nodeName: is immutable (pod runs on {old.node}); delete it first")
    if problems:
        raise LabError("\n".join(problems))


def _admit_services(st: LabState, resources: list[Resource]) -> dict[str, dict]:  # type: ignore[type-arg]
    """Every Service of the change as it will be stored, checked before anything is written."""
    cidr = (st.spec.get("cluster") or {}).get("serviceCIDR", "10.96.0.0/12")
    incoming = {r.key for r in resources if r.kind == "Service"}
    alloc = service_objects.Allocator(cidr, [v for k, v in st.services.items() if k not in incoming])
    out, problems = {}, []
    # Services that pick their ClusterIP are admitted before those that get one allocated.
    for r in sorted((r for r in resources if r.kind == "Service"),
                    key=lambda r: not (r.raw.get("spec") or {}).get("clusterIP")):
        try:
            out[r.key] = service_objects.admit(r.raw, st.services.get(r.key), alloc)
        except ObjectError as e:
            problems.append(f"{r.describe()}: {e.path}: {str(e).split(': ', 2)[-1]}")
        except LabError as e:
            problems.append(f"{r.describe()}: {e}")
    if problems:
        raise LabError("\n".join(problems))
    return out


def _apply(paths: LabPaths, st: LabState, resources: list[Resource], timeout: float, progress: Progress) -> list[str]:
    deadline = time.monotonic() + timeout
    _check_refs(st, resources)
    services = _admit_services(st, resources)
    writer = ManifestWriter(paths.manifest_dir)
    lines: list[str] = []
    new_pods: list[PodState] = []
    restart: list[PodState] = []
    for r in sorted(resources, key=lambda r: ORDER.index(r.kind)):
        lines.append(_write_one(paths, st, writer, r, services, new_pods, restart))
    st.manifestVersion = writer.bump()
    lstate.save(paths, st)
    agents.wait_ready(paths, st.nodes.values(), st.manifestVersion, max(1.0, deadline - time.monotonic()))
    for p in restart:
        pods.stop_server(paths, p)
        pods.start_server(paths, p)
    if restart:
        lstate.save(paths, st)
        pods.wait_servers(paths, restart)
    try:
        create_pods(paths, st, writer, new_pods, deadline, progress)
    except LabError:
        # Leave no half-made pod behind: a pod whose ADD failed is removed again (manifest too).
        for p in new_pods:
            if p.ip is None:
                _remove_pod(paths, st, writer, p)
        st.manifestVersion = writer.bump()
        lstate.save(paths, st)
        raise
    reconcile.settle(paths, st, writer, deadline)
    lstate.save(paths, st)
    return lines


def _write_one(paths: LabPaths, st: LabState, writer: ManifestWriter, r: Resource, services: dict[str, dict[str, Any]],
               new_pods: list[PodState], restart: list[PodState]) -> str:
    """One object's manifest written and the lab state updated; its kubectl-style line. A new pod
    goes to ``new_pods`` (CNI ADD follows), one whose ports changed to ``restart``."""
    if r.kind == "Namespace":
        old = st.namespaces.get(r.name)
        if old == r.labels:
            return f"namespace/{r.name} unchanged"
        writer.write(namespace_object(r.name, r.labels))
        st.namespaces[r.name] = r.labels
        return f"namespace/{r.name} {'created' if old is None else 'configured'}"
    if r.kind == "Pod":
        ports = [PortState(**p) for p in r.ports or []]
        p = st.pods.get(r.key)
        if p is None:
            p = pods.new_pod_state(paths, r.namespace or "default", r.name, pods.schedule(st, r.node),
                                   r.labels, r.ports or [], r.ready)
            st.pods[p.key] = p
            new_pods.append(p)
            line = f"pod/{r.key} created"
        elif p.labels == r.labels and p.ports == ports and p.ready == r.ready:
            return f"pod/{r.key} unchanged"
        else:
            if p.ports != ports:
                restart.append(p)
            p.labels, p.ports, p.ready = dict(r.labels), ports, r.ready
            line = f"pod/{r.key} configured"
        pods.write_manifest(writer, st, p)
        return line
    if r.kind == "Service":
        old = st.services.get(r.key)
        if old == services[r.key]:
            return f"service/{r.key} unchanged"
        st.services[r.key] = services[r.key]
        writer.write(services[r.key])
        return f"service/{r.key} {'created' if old is None else 'configured'}"
    kind = r.kind.lower()
    path = paths.manifest_dir / writer.filename(r.kind, r.name, r.namespace)
    existed = path.exists()
    before = path.read_text() if existed else None
    writer.write(r.raw)
    if before is not None and before == path.read_text():
        return f"{kind}/{r.key} unchanged"
    keys = st.policies if r.kind == "NetworkPolicy" else st.endpointSlices
    if r.key not in keys:
        keys.append(r.key)
    return f"{kind}/{r.key} {'configured' if existed else 'created'}"


def delete(lab: str, resources: list[Resource], timeout: float = 60.0, ignore_not_found: bool = False,
           progress: Progress = _quiet) -> tuple[list[str], list[str]]:
    """Delete objects; returns (kubectl-style lines, not-found messages)."""
    paths, _ = load_running(lab)
    with lab_lock(paths):
        st = lstate.load(paths)
        assert st is not None
        deadline = time.monotonic() + timeout
        writer = ManifestWriter(paths.manifest_dir)
        lines: list[str] = []
        missing: list[str] = []
        errors: list[str] = []
        for r in resources:
            if r.kind == "Pod":
                p = st.pods.get(r.key)
                if p is None:
                    missing.append(f'pods "{r.key}" not found')
                    continue
                err = _remove_pod(paths, st, writer, p)
                if err:
                    errors.append(err)
                lines.append(f"pod/{r.key} deleted")
            elif r.kind in ("NetworkPolicy", "EndpointSlice", "Service"):
                if not writer.remove(r.kind, r.name, r.namespace):
                    missing.append(f'{PLURAL[r.kind]} "{r.key}" not found')
                    continue
                for keys in (st.policies, st.endpointSlices):
                    if r.key in keys and r.kind != "Service":
                        keys.remove(r.key)
                if r.kind == "Service":
                    st.services.pop(r.key, None)
                lines.append(f"{r.kind.lower()}/{r.key} deleted")
            else:
                if r.name not in st.namespaces:
                    missing.append(f'namespaces "{r.name}" not found')
                    continue
                _delete_namespace(paths, st, writer, r.name, lines, errors)
        st.manifestVersion = writer.bump()
        lstate.save(paths, st)
        agents.wait_ready(paths, st.nodes.values(), st.manifestVersion, max(1.0, deadline - time.monotonic()))
        reconcile.settle(paths, st, writer, deadline)
        lstate.save(paths, st)
        if errors:
            raise LabError("objects deleted, but CNI DEL reported errors:\n" + "\n".join(errors))
        if missing and not ignore_not_found:
            # Report what was done as well; the caller prints lines before raising.
            raise NotFound(lines, missing)
        return lines, missing



def _delete_namespace(paths: LabPaths, st: LabState, writer: ManifestWriter, name: str, lines: list[str],
                      errors: list[str]) -> None:
    """Like Kubernetes: a namespace takes its pods, policies, slices and Services with it."""
    for p in [p for p in st.pods.values() if p.namespace == name]:
        err = _remove_pod(paths, st, writer, p)
        if err:
            errors.append(err)
        lines.append(f"pod/{p.key} deleted")
    for kind, keys in (("NetworkPolicy", st.policies), ("EndpointSlice", st.endpointSlices),
                       ("Service", list(st.services))):
        for key in [k for k in keys if k.split("/", 1)[0] == name]:
            writer.remove(kind, key.split("/", 1)[1], name)
            if kind == "Service":
                st.services.pop(key)
            else:
                keys.remove(key)
            lines.append(f"{kind.lower()}/{key} deleted")
    writer.remove("Namespace", name)
    del st.namespaces[name]
    lines.append(f"namespace/{name} deleted")

class NotFound(LabError):
    def __init__(self, lines: list[str], missing: list[str]):
        super().__init__("\n".join(missing))
        self.lines, self.missing = lines, missing


def _remove_pod(paths: LabPaths, st: LabState, writer: ManifestWriter, p: PodState) -> str | None:
    pods.stop_server(paths, p)
    # DEL even after a failed ADD: the CNI spec asks runtimes to, so a half-done ADD is undone.
    err = pods.detach(paths, st, p)
    if netns.exists(p.netns):
        netns.remove(p.netns)
    writer.remove("Pod", p.name, p.namespace)
    st.pods.pop(p.key, None)
    return err
