"""The kube-apiserver's own validation rules for pod templates that the OpenAPI schemas do not carry.

No API server runs here; these are the rules of kubernetes/kubernetes
``pkg/apis/core/validation/validation.go`` (and ``pkg/apis/apps/validation/validation.go`` for
the DaemonSet) that the chart's objects can break, each named after the upstream function that
enforces it, with its message. ``check(obj)`` returns the violations as ``"path: message"``.
"""

from __future__ import annotations

import re
from typing import Any

_IANA_SVC_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_PROBES = ("readinessProbe", "livenessProbe", "startupProbe")
_HANDLERS = ("exec", "httpGet", "tcpSocket", "grpc")


def _pod_spec(obj: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    if obj.get("kind") == "Pod":
        return "spec", obj["spec"]
    tpl = (obj.get("spec") or {}).get("template")
    if obj.get("kind") in ("DaemonSet", "Deployment", "StatefulSet", "ReplicaSet", "Job") and tpl:
        return "spec.template.spec", tpl["spec"]
    return None


def check(obj: dict[str, Any]) -> list[str]:
    errs: list[str] = []
    found = _pod_spec(obj)
    if found is None:
        return errs
    base, spec = found
    volumes = {v["name"] for v in spec.get("volumes", [])}
    host_network = bool(spec.get("hostNetwork"))
    names: set[str] = set()
    port_names: set[str] = set()
    for kind in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(kind, [])):
            at = f"{base}.{kind}[{i}]"
            # validateContainers / validateInitContainers: names unique across both lists
            if c["name"] in names:
                errs.append(f"{at}.name: Duplicate value: {c['name']!r}")
            names.add(c["name"])
            privileged = bool((c.get("securityContext") or {}).get("privileged"))
            mount_paths: set[str] = set()
            for j, m in enumerate(c.get("volumeMounts", [])):
                mat = f"{at}.volumeMounts[{j}]"
                # validateVolumeMounts: the volume must exist; mountPath unique in the container
                if m["name"] not in volumes:
                    errs.append(f"{mat}.name: Not found: {m['name']!r}")
                if m["mountPath"] in mount_paths:
                    errs.append(f"{mat}.mountPath: Invalid value: {m['mountPath']!r}: must be unique")
                mount_paths.add(m["mountPath"])
                # validateMountPropagation
                prop = m.get("mountPropagation")
                if prop is not None and prop not in ("None", "HostToContainer", "Bidirectional"):
                    errs.append(f"{mat}.mountPropagation: Unsupported value: {prop!r}")
                if prop == "Bidirectional" and not privileged:
                    errs.append(f"{mat}.mountPropagation: Forbidden: Bidirectional mount propagation is "
                                "available only to privileged containers")
            for j, p in enumerate(c.get("ports", [])):
                pat = f"{at}.ports[{j}]"
                # validateContainerPorts: IANA_SVC_NAME, unique within the pod
                if "name" in p:
                    if len(p["name"]) > 15 or not _IANA_SVC_NAME.match(p["name"]) or not re.search("[a-z]", p["name"]):
                        errs.append(f"{pat}.name: Invalid value: {p['name']!r}: must be an IANA_SVC_NAME")
                    if p["name"] in port_names:
                        errs.append(f"{pat}.name: Duplicate value: {p['name']!r}")
                    port_names.add(p["name"])
                # validateHostNetwork: with hostNetwork, hostPort (if set) must equal containerPort
                if host_network and "hostPort" in p and p["hostPort"] != p["containerPort"]:
                    errs.append(f"{pat}.hostPort: Invalid value: {p['hostPort']}: must match `containerPort` "
                                "when `hostNetwork` is true")
            for probe in _PROBES:
                if probe not in c:
                    continue
                # validateInitContainers: init containers (without restartPolicy Always) have no probes
                if kind == "initContainers" and c.get("restartPolicy") != "Always":
                    errs.append(f"{at}.{probe}: Forbidden: may not be set for init containers")
                # validateHandler: exactly one handler
                handlers = [h for h in _HANDLERS if h in c[probe]]
                if len(handlers) != 1:
                    errs.append(f"{at}.{probe}: Invalid value: must specify exactly one handler type, got {handlers}")
            lifecycle = c.get("lifecycle") or {}
            for hook in ("postStart", "preStop"):
                if hook in lifecycle and len([h for h in ("exec", "httpGet", "tcpSocket", "sleep") if h in lifecycle[hook]]) != 1:
                    errs.append(f"{at}.lifecycle.{hook}: Invalid value: must specify exactly one handler type")
            # ValidateResourceRequirements: requests may not exceed limits
            res = c.get("resources") or {}
            for rname, req in (res.get("requests") or {}).items():
                lim = (res.get("limits") or {}).get(rname)
                if lim is not None and _quantity(req) > _quantity(lim):
                    errs.append(f"{at}.resources.requests[{rname}]: Invalid value: {req!r}: must be less than or "
                                f"equal to {rname} limit of {lim}")
    # validateDNSPolicy / validateHostNetwork
    if spec.get("dnsPolicy") not in (None, "ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"):
        errs.append(f"{base}.dnsPolicy: Unsupported value: {spec.get('dnsPolicy')!r}")
    if obj.get("kind") == "DaemonSet":
        # apps ValidateDaemonSetSpec: the selector matches the template's labels; restartPolicy Always
        sel = ((obj["spec"].get("selector") or {}).get("matchLabels")) or {}
        labels = ((obj["spec"]["template"].get("metadata") or {}).get("labels")) or {}
        if not sel or any(labels.get(k) != v for k, v in sel.items()):
            errs.append("spec.template.metadata.labels: Invalid value: `selector` does not match template `labels`")
        if spec.get("restartPolicy", "Always") != "Always":
            errs.append(f"{base}.restartPolicy: Unsupported value: {spec['restartPolicy']!r}")
    return errs


_SUFFIX = {"m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def _quantity(q: Any) -> float:
    m = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(q))
    if not m or m.group(2) not in _SUFFIX:
        raise ValueError(f"quantity {q!r} not understood")
    return float(m.group(1)) * _SUFFIX[m.group(2)]
