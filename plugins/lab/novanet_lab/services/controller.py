"""EndpointSlices from Service selectors and pod readiness, as kube-controller-manager's
EndpointSlice controller makes them (``staging/src/k8s.io/endpointslice``: ``reconciler.go``,
``utils.go`` ``podToEndpoint``, ``getEndpointPorts``, ``FindPort``). No controller manager runs in
the lab; this is its observable behaviour:

- a Service with a non-empty ``selector`` (and not ExternalName) gets slices per IP family of
  the Service (``addressType`` IPv4 / IPv6), each listing every pod of its namespace whose labels
  match and that has an address of that family; a Service without one gets none (whoever
  manages its endpoints writes them: ``lab apply`` of an EndpointSlice);
- each endpoint: the pod IP, ``nodeName``, ``targetRef`` to the pod, and the conditions
  ``serving`` = the pod's Ready condition, ``terminating`` = the pod is being deleted,
  ``ready`` = serving and not terminating (or true with ``publishNotReadyAddresses``);
- ports are resolved per pod: a numeric ``targetPort`` as it is, a named one as the pod's
  container port of that name and protocol; a port the pod does not have is left out for that
  pod. Pods with the same resolved ports share slices, at most 100 endpoints per slice;
- labels: ``kubernetes.io/service-name``, ``endpointslice.kubernetes.io/managed-by``,
  ``service.kubernetes.io/headless`` for a headless Service, and the Service's own labels.

What differs: the real controller names slices ``<service>-<random>``; here the suffix is a
hash of the Service and the port set, so a lab's slices keep their names across runs, and the
managed-by value is ``novanet-lab``, not the controller's. Topology hints are not set.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from typing import Any

from novanet_core import ipfamily
from novanet_core.state.model import ClusterState, Pod
from novanet_core.state.services import CLUSTER_IP_NONE, SERVICE_NAME_LABEL, Service, ServicePort

MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
MANAGED_BY = "novanet-lab"
HEADLESS_LABEL = "service.kubernetes.io/headless"
RESERVED_LABELS = (SERVICE_NAME_LABEL, MANAGED_BY_LABEL, HEADLESS_LABEL)
MAX_ENDPOINTS_PER_SLICE = 100


def find_port(pod: Pod, sp: ServicePort) -> int | None:
    if isinstance(sp.target_port, int):
        return sp.target_port
    return next((cp.port for cp in pod.ports if cp.name == sp.target_port and cp.protocol == sp.protocol), None)


def _selects(selector: dict[str, str], pod: Pod) -> bool:
    return all(pod.labels.get(k) == v for k, v in selector.items())


def _suffix(*parts: str) -> str:
    digest = hashlib.sha256("\0".join(parts).encode()).digest()
    return base64.b32encode(digest).decode().lower()[:5]


def address_types(svc: Service) -> list[str]:
    """The addressTypes the controller keeps slices of: one per ``ipFamilies`` entry (``utils.go``
    ``getAddressTypesForService``), else the clusterIPs' families; a Service stored before the
    lab filled in families and with no address has IPv4 slices."""
    if svc.ip_families:
        return list(svc.ip_families)
    fams = [f"IPv{ipfamily.family_of(ip)}" for ip in svc.cluster_ips if ip != CLUSTER_IP_NONE]
    return fams or ["IPv4"]


def slices_for(svc: Service, pods: Iterable[Pod]) -> list[dict[str, Any]]:
    """The EndpointSlice objects the controller keeps for one Service ([] when it manages none)."""
    if not svc.selector or svc.type == "ExternalName":
        return []
    labels = {k: v for k, v in svc.labels.items() if k not in RESERVED_LABELS}
    labels.update({SERVICE_NAME_LABEL: svc.name, MANAGED_BY_LABEL: MANAGED_BY})
    if svc.headless:
        labels[HEADLESS_LABEL] = ""
    out = []
    for address_type in address_types(svc):
        version = 4 if address_type == "IPv4" else 6
        groups: dict[tuple[tuple[str, str, int], ...], list[Pod]] = {}
        for pod in sorted(pods, key=lambda p: p.name):
            # a pod without an address of this family is no endpoint of this family's slices
            if pod.namespace != svc.namespace or not ipfamily.pick(pod.ips, version) \
                    or not _selects(dict(svc.selector), pod):
                continue
            ports = []
            for sp in svc.ports:
                n = find_port(pod, sp)
                if n is not None:
                    ports.append((sp.name, sp.protocol, n))
            groups.setdefault(tuple(ports), []).append(pod)
        # IPv4 slices keep the names they had before slices were made per family
        tag = () if version == 4 else (address_type,)
        for ports, members in sorted(groups.items()):
            for chunk in range(0, len(members), MAX_ENDPOINTS_PER_SLICE):
                part = members[chunk:chunk + MAX_ENDPOINTS_PER_SLICE]
                name = f"{svc.name}-{_suffix(svc.key, repr(ports), str(chunk), *tag)}"
                out.append({
                    "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                    "metadata": {"name": name, "namespace": svc.namespace, "labels": dict(labels)},
                    "addressType": address_type,
                    "ports": [{"name": n, "protocol": proto, "port": port} for n, proto, port in ports],
                    "endpoints": [_endpoint(svc, p, version) for p in part],
                })
    return out


def _endpoint(svc: Service, pod: Pod, version: int) -> dict[str, Any]:
    serving = pod.ready
    ready = svc.publish_not_ready_addresses or (serving and not pod.terminating)
    ep: dict[str, Any] = {"addresses": [ipfamily.pick(pod.ips, version)],
                          "conditions": {"ready": ready, "serving": serving, "terminating": pod.terminating},
                          "targetRef": {"kind": "Pod", "namespace": pod.namespace, "name": pod.name}}
    if pod.node:
        ep["nodeName"] = pod.node
    return ep


def desired(state: ClusterState) -> dict[str, dict[str, Any]]:
    """Every slice the controller keeps in this state, by ``ns/name``."""
    out = {}
    for svc in state.services.values():
        for obj in slices_for(svc, state.pods.values()):
            out[f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"] = obj
    return out


def managed(state: ClusterState) -> set[str]:
    """The slices in this state that the controller made (it never touches the others)."""
    return {k for k, s in state.endpointslices.items() if s.labels.get(MANAGED_BY_LABEL) == MANAGED_BY}
