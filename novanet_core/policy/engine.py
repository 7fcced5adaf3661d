"""The NetworkPolicy compiler: cluster state in, per-endpoint :class:`EndpointPolicy` out.

:class:`PolicyEngine` keeps the state it compiled from, so that a pod, namespace or policy change
recompiles only the endpoints it can affect and returns just those whose compiled policy changed
(a *delta*: pod key -> new :class:`EndpointPolicy`, or ``None`` when the endpoint went away).
Semantics (Kubernetes NetworkPolicy v1 plus NovaNet's ``policy.defaultDeny``) are written down
in docs/policy.md; :mod:`novanet_core.policy.evaluate` is the per-packet meaning.

Selectors are resolved per *identity* (namespace + pod labels), not per pod: every pod of one
identity is matched by exactly the same selectors, and there are far fewer identities than pods.
Named ports are the exception, being per pod: they are resolved against each selected pod
(ingress) or each destination pod (egress), and a destination whose identity-mates disagree on
the port number is addressed by its /32 instead of its identity.
"""

from __future__ import annotations

import ipaddress
import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from novanet_core.identity import IdentityAllocator
from novanet_core.policy.compiled import (
    OPEN,
    AnyPeer,
    CidrPeer,
    DirectionPolicy,
    EndpointPolicy,
    IdentityPeer,
    Peer,
    PortRange,
    Rule,
)
from novanet_core.policy.selectors import LabelSelector
from novanet_core.policy.spec import ParsedPolicy, PeerSpec, PortSpec, RuleSpec, parse_policy
from novanet_core.policy.validate import PolicyValidationError
from novanet_core.state.model import ClusterState, Namespace, NetworkPolicy, Pod, StateEvent

log = logging.getLogger("novanet.policy")

NS_NAME_LABEL = "kubernetes.io/metadata.name"
Delta = dict[str, EndpointPolicy | None]


@dataclass
class _IdentGroup:
    namespace: str
    labels: Mapping[str, str]
    pods: set[str] = field(default_factory=set)
    local: set[str] = field(default_factory=set)  # the pods among them this engine compiles


@dataclass(frozen=True)
class _Resolved:
    """A policy resolved against the current pods/namespaces (all but per-target named ports)."""

    policy: ParsedPolicy
    targets: frozenset[int]
    ingress_fixed: tuple[Rule, ...]
    # Ingress rules with named ports: resolved against each selected pod's own container ports.
    ingress_named: tuple[tuple[RuleSpec, tuple[Peer, ...]], ...]
    egress: tuple[Rule, ...]
    warnings: tuple[str, ...]

    def peers(self) -> Iterable[Peer]:
        for r in self.ingress_fixed + self.egress:
            yield r.peer
        for _, ps in self.ingress_named:
            yield from ps


def _host_cidr(ip: str) -> str:
    return f"{ip}/{ipaddress.ip_address(ip).max_prefixlen}"


def resolve_ports(specs: tuple[PortSpec, ...], pod: Pod | None) -> tuple[PortRange, ...] | None:
    """Port specs as ranges; named ports looked up in ``pod``'s container ports (skipped if None).

    ``None`` means any port of any protocol; an empty tuple means the rule can match nothing.
    """
    if not specs:
        return None
    out: set[PortRange] = set()
    for s in specs:
        if s.port is None:
            out.add(PortRange(s.protocol, 0, 65535))
        elif isinstance(s.port, int):
            out.add(PortRange(s.protocol, s.port, s.end_port if s.end_port is not None else s.port))
        elif pod is not None:
            for cp in pod.ports:
                if cp.name == s.port and cp.protocol == s.protocol:
                    out.add(PortRange(s.protocol, cp.port, cp.port))
    return tuple(sorted(out))


_UNSET: Any = object()


class PolicyEngine:
    """The compiled policy of every (local) endpoint, and what it is derived from.

    The namespaces, pods and policies it reads are a :class:`ClusterState`'s tables. Given
    ``state``, they are that state's own (the agent's: one owner, which writes each event before
    the engine takes it in, passing the object it replaced as ``old``); without it the engine
    keeps a state of its own, as tools and tests use it."""

    def __init__(
        self,
        *,
        default_deny: bool = False,
        node: str | None = None,
        identities: IdentityAllocator | None = None,
        logger: logging.Logger | None = None,
        state: ClusterState | None = None,
    ) -> None:
        self.default_deny = default_deny
        # Only pods on this node get an EndpointPolicy (None = every pod, for tools and tests).
        self.node = node
        self._alloc = identities if identities is not None else IdentityAllocator()
        self._log = logger or log
        self._shared = state
        self._own_tables(state if state is not None else ClusterState())
        self.rejected: dict[str, list[str]] = {}
        self.endpoints: dict[str, EndpointPolicy] = {}
        self._reset_derived()

    def _own_tables(self, state: ClusterState) -> None:
        self.namespaces: dict[str, Namespace] = state.namespaces
        self.pods: dict[str, Pod] = state.pods
        self.policies: dict[str, NetworkPolicy] = state.policies  # as received, valid or not

    def _reset_derived(self) -> None:
        self._ns_labels_cache: dict[str, Mapping[str, str]] = {}
        self._pod_ident: dict[str, int] = {}
        self._groups: dict[int, _IdentGroup] = {}
        self._ns_idents: dict[str, set[int]] = defaultdict(set)
        self._ip_pod: dict[str, str] = {}
        # pod IP -> parsed, filled on first use: only ipBlock peers need it, and parsing every
        # pod's address up front was a third of a 30,000-pod full compile
        self._addr: dict[str, ipaddress.IPv4Address | ipaddress.IPv6Address] = {}
        self._parsed: dict[str, ParsedPolicy] = {}
        self._touch: _TouchIndex | None = None  # rebuilt lazily after any change to _parsed
        self._resolved: dict[str, _Resolved] = {}
        self._selected_by: dict[int, set[str]] = defaultdict(set)
        self._sel_cache: dict[tuple[object, ...], frozenset[int]] = {}
        self._mirror: _MirrorIndex | None = None
        self._warned: set[str] = set()

    # ------------------------------------------------------------------ public: full compile

    def load(self, state: ClusterState) -> dict[str, EndpointPolicy]:
        """Forget everything and compile ``state`` from scratch (agent start)."""
        for ident in list(self._pod_ident.values()):
            self._alloc.release(ident)
        self.rejected, self.endpoints = {}, {}
        self._reset_derived()
        if state is not self._shared:  # a state of the caller's: copied, the caller may change it
            self._own_tables(ClusterState(namespaces=dict(state.namespaces), pods=dict(state.pods),
                                          policies=dict(state.policies)))
        for pod in self.pods.values():
            self._index_pod(pod)
        for np in self.policies.values():
            parsed = self._parse(np)
            if parsed is not None:
                self._parsed[np.key] = parsed
        self._touch = None
        for key, parsed in self._parsed.items():
            self._install(key, self._resolve(parsed))
        for key, pod in self.pods.items():
            if self._is_local(pod):
                self.endpoints[key] = self._assemble(key)
        return dict(self.endpoints)

    # ------------------------------------------------------------------ public: incremental

    def apply(self, ev: StateEvent, old: Any = _UNSET) -> Delta:
        """Feed one state-source event; returns the endpoints whose compiled policy changed.
        ``old``: the object the event replaced, when the shared state has taken the event in
        already (the agent's order); otherwise read from the tables before they change."""
        if ev.type == "SYNCED" or ev.kind not in ("Pod", "Namespace", "NetworkPolicy"):
            return {}
        if old is _UNSET:
            old = self._state_table(ev.kind).get(ev.obj.key)
        deleted = ev.type == "DELETED"
        if ev.kind == "Pod":
            return self._pod_deleted(ev.obj.key, old) if deleted else self._pod_changed(old, ev.obj)
        if ev.kind == "Namespace":
            return self._namespace_changed(ev.obj.name, None if deleted else ev.obj, old)
        return self.delete_policy(ev.obj.key) if deleted else self.upsert_policy(ev.obj)

    def _state_table(self, kind: str) -> dict[str, Any]:
        return {"Pod": self.pods, "Namespace": self.namespaces, "NetworkPolicy": self.policies}[kind]

    def upsert_pod(self, pod: Pod) -> Delta:
        return self._pod_changed(self.pods.get(pod.key), pod)

    def _pod_changed(self, old: Pod | None, pod: Pod) -> Delta:
        if old == pod:
            return {}
        affected = self._policies_touching(old) if old else set()
        if old:
            self._unindex_pod(old)
        self.pods[pod.key] = pod
        self._index_pod(pod)
        self._sel_cache.clear()
        affected |= self._policies_touching(pod)
        dirty = {pod.key}
        self._reresolve(affected, dirty)
        self._refresh_named_mirrors(affected, (old, pod), dirty)
        return self._reassemble(dirty)

    def delete_pod(self, key: str) -> Delta:
        return self._pod_deleted(key, self.pods.get(key))

    def _pod_deleted(self, key: str, old: Pod | None) -> Delta:
        if old is None:
            return {}
        affected = self._policies_touching(old)
        self._unindex_pod(old)
        self.pods.pop(key, None)
        self._sel_cache.clear()
        dirty = {key}
        self._reresolve(affected, dirty)
        self._refresh_named_mirrors(affected, (old,), dirty)
        return self._reassemble(dirty)

    def upsert_namespace(self, ns: Namespace) -> Delta:
        return self._namespace_changed(ns.name, ns, self.namespaces.get(ns.name))

    def delete_namespace(self, name: str) -> Delta:
        return self._namespace_changed(name, None, self.namespaces.get(name))

    def upsert_policy(self, np: NetworkPolicy) -> Delta:
        self.policies[np.key] = np
        parsed = self._parse(np)
        if parsed is None:
            # Like an apiserver refusing an update: the last valid version (if any) stays enforced.
            return {}
        if self._parsed.get(np.key) == parsed:
            return {}
        self._parsed[np.key] = parsed
        self._touch = None
        dirty: set[str] = set()
        self._reresolve({np.key}, dirty)
        return self._reassemble(dirty)

    def delete_policy(self, key: str) -> Delta:
        self.policies.pop(key, None)
        self.rejected.pop(key, None)
        if self._parsed.pop(key, None) is None:
            return {}
        self._touch = None
        dirty: set[str] = set()
        self._reresolve({key}, dirty)
        return self._reassemble(dirty)

    # ------------------------------------------------------------------ public: queries

    def identity_of(self, pod_key: str) -> int | None:
        return self._pod_ident.get(pod_key)

    def pod_by_ip(self, ip: str) -> Pod | None:
        key = self._ip_pod.get(ip)
        return self.pods.get(key) if key else None

    def warnings(self) -> dict[str, list[str]]:
        """Current resolution warnings per policy (named ports / namespace selectors)."""
        return {k: list(r.warnings) for k, r in sorted(self._resolved.items()) if r.warnings}

    def rules(self) -> list[tuple[str, str, Rule]]:
        """(endpoint, direction, rule) for every compiled rule: what ``novanetctl policy`` lists."""
        out = []
        for key in sorted(self.endpoints):
            ep = self.endpoints[key]
            for d in ("ingress", "egress"):
                out.extend((key, d, r) for r in ep.direction(d).rules)
        return out

    def evaluate(self, src: str | Pod, dst: str | Pod, protocol: str, port: int):  # -> Verdict
        from novanet_core.policy.evaluate import evaluate

        return evaluate(self, src, dst, protocol, port)

    # ------------------------------------------------------------------ state indexing

    def _is_local(self, pod: Pod) -> bool:
        return self.node is None or pod.node == self.node

    def _ns_labels(self, name: str) -> Mapping[str, str]:
        lab = self._ns_labels_cache.get(name)
        if lab is None:
            ns = self.namespaces.get(name)
            lab = ns.effective_labels if ns else {NS_NAME_LABEL: name}
            self._ns_labels_cache[name] = lab
        return lab

    def _index_pod(self, pod: Pod) -> None:
        ident = self._alloc.acquire(pod.namespace, pod.labels)
        self._pod_ident[pod.key] = ident
        g = self._groups.get(ident)
        if g is None:
            g = self._groups[ident] = _IdentGroup(pod.namespace, dict(pod.labels))
            self._ns_idents[pod.namespace].add(ident)
        g.pods.add(pod.key)
        if self._is_local(pod):
            g.local.add(pod.key)
        for ip in pod.ips:  # every family's address: an ipBlock matches a dual-stack pod by either
            self._ip_pod[ip] = pod.key

    def _unindex_pod(self, pod: Pod) -> None:
        ident = self._pod_ident.pop(pod.key)
        self._alloc.release(ident)
        g = self._groups[ident]
        g.pods.discard(pod.key)
        g.local.discard(pod.key)
        if not g.pods:
            del self._groups[ident]
            self._ns_idents[pod.namespace].discard(ident)
        for ip in pod.ips:
            if self._ip_pod.get(ip) == pod.key:
                del self._ip_pod[ip]
                self._addr.pop(ip, None)

    def _address(self, ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        a = self._addr.get(ip)
        if a is None:
            a = self._addr[ip] = ipaddress.ip_address(ip)
        return a

    def _pods_of(self, idents: Iterable[int], local_only: bool = False) -> set[str]:
        out: set[str] = set()
        for i in idents:
            g = self._groups.get(i)
            if g:
                out |= g.local if local_only else g.pods
        return out

    def _parse(self, np: NetworkPolicy) -> ParsedPolicy | None:
        try:
            parsed = parse_policy(np)
        except PolicyValidationError as e:
            if self.rejected.get(np.key) != e.errors:
                self._log.warning("%s", e)
            self.rejected[np.key] = e.errors
            return None
        self.rejected.pop(np.key, None)
        return parsed

    # ------------------------------------------------------------------ resolution

    def _idents_matching(self, ns_sel: LabelSelector | None, pod_sel: LabelSelector | None,
                         own_ns: str) -> frozenset[int]:
        key = (ns_sel, pod_sel, own_ns if ns_sel is None else None)
        hit = self._sel_cache.get(key)
        if hit is not None:
            return hit
        if ns_sel is None:
            nss: Iterable[str] = (own_ns,)
        else:
            nss = [n for n in set(self.namespaces) | set(self._ns_idents) if ns_sel.matches(self._ns_labels(n))]
        out = set()
        for n in nss:
            for i in self._ns_idents.get(n, ()):
                if pod_sel is None or pod_sel.matches(self._groups[i].labels):
                    out.add(i)
        res = frozenset(out)
        self._sel_cache[key] = res
        return res

    def _rule_peers(self, pol: ParsedPolicy, r: RuleSpec, warns: list[str]) -> tuple[Peer, ...]:
        if not r.peers:
            return (AnyPeer(),)
        idents: set[int] = set()
        out: list[Peer] = []
        for p in r.peers:
            if p.kind == "cidr":
                out.append(CidrPeer(p.cidr or "", p.excepts))
                continue
            if p.namespace_selector is not None and not self._namespaces_matching(p.namespace_selector):
                warns.append(
                    f"failed to list namespaces for policy resolution selector={p.namespace_selector} "
                    f"error=no namespace matches (policy {pol.key} {p.path})"
                )
            idents |= self._idents_matching(p.namespace_selector, p.pod_selector, pol.namespace)
        if idents:
            out.insert(0, IdentityPeer(frozenset(idents)))
        return tuple(out)

    def _namespaces_matching(self, sel: LabelSelector) -> bool:
        return any(sel.matches(self._ns_labels(n)) for n in set(self.namespaces) | set(self._ns_idents))

    def _resolve(self, pol: ParsedPolicy) -> _Resolved:
        warns: list[str] = []
        targets = self._idents_matching(None, pol.pod_selector, pol.namespace)
        ing_fixed: list[Rule] = []
        ing_named: list[tuple[RuleSpec, tuple[Peer, ...]]] = []
        for r in pol.ingress or ():
            peers = self._rule_peers(pol, r, warns)
            if r.named_ports:
                ing_named.append((r, peers))
                if targets:
                    self._warn_named(pol, r, self._pods_of(targets), "selected by", warns)
                continue
            ports = resolve_ports(r.ports, None)
            ing_fixed.extend(Rule(p, ports, pol.key, r.origin) for p in peers)
        egress: list[Rule] = []
        for r in pol.egress or ():
            peers = self._rule_peers(pol, r, warns)
            if not r.named_ports:
                ports = resolve_ports(r.ports, None)
                egress.extend(Rule(p, ports, pol.key, r.origin) for p in peers)
                continue
            numeric = tuple(s for s in r.ports if not isinstance(s.port, str))
            named = tuple(s for s in r.ports if isinstance(s.port, str))
            if numeric:
                egress.extend(Rule(p, resolve_ports(numeric, None), pol.key, r.origin) for p in peers)
            dests = self._destination_pods(peers)
            egress.extend(self._per_destination_rules(named, dests, pol.key, r.origin))
            self._warn_named(pol, r, {k for k, _ in dests}, "reachable through", warns)
        return _Resolved(pol, targets, tuple(ing_fixed), tuple(ing_named), tuple(egress), tuple(warns))

    def _destination_pods(self, peers: tuple[Peer, ...]) -> list[tuple[str, bool]]:
        """Pods a peer list can reach, each flagged True when it is matched by identity."""
        out: dict[str, bool] = {}
        for p in peers:
            if isinstance(p, IdentityPeer):
                for k in self._pods_of(p.identities):
                    out[k] = True
            elif isinstance(p, AnyPeer):
                for k in self.pods:
                    out[k] = True
            else:
                for ip, k in self._ip_pod.items():
                    if p.contains(self._address(ip)):
                        out.setdefault(k, False)
        return sorted(out.items())

    def _per_destination_rules(self, named: tuple[PortSpec, ...], dests: list[tuple[str, bool]],
                               policy: str, origin: str) -> list[Rule]:
        by_ident: dict[int, set[tuple[PortRange, ...]]] = defaultdict(set)
        ports_of: dict[str, tuple[PortRange, ...]] = {}
        for k, by_identity in dests:
            ports = resolve_ports(named, self.pods[k]) or ()
            ports_of[k] = ports
            if by_identity:
                by_ident[self._pod_ident[k]].add(ports)
        ident_groups: dict[tuple[PortRange, ...], set[int]] = defaultdict(set)
        ip_rules: list[Rule] = []
        for k, by_identity in dests:
            ports = ports_of[k]
            if not ports:
                continue
            ident = self._pod_ident[k]
            if by_identity and len(by_ident[ident]) == 1:
                ident_groups[ports].add(ident)
            else:  # by address: each of the pod's (a /32 and, dual-stack, a /128)
                ip_rules.extend(Rule(CidrPeer(_host_cidr(ip)), ports, policy, origin) for ip in self.pods[k].ips)
        out = [Rule(IdentityPeer(frozenset(ids)), ports, policy, origin) for ports, ids in sorted(
            ident_groups.items())]
        return out + sorted(set(ip_rules), key=lambda r: r.peer.cidr)  # type: ignore[union-attr]

    def _warn_named(self, pol: ParsedPolicy, r: RuleSpec, pods: set[str], how: str, warns: list[str]) -> None:
        for s in r.ports:
            if not isinstance(s.port, str):
                continue
            if not any(cp.name == s.port and cp.protocol == s.protocol for k in pods for cp in self.pods[k].ports):
                warns.append(
                    f"failed to list pods for named port resolution port={s.port} namespace={pol.namespace} "
                    f"error=no pod {how} {pol.key} {r.origin} declares a {s.protocol} container port "
                    f"named {s.port}"
                )

    def _install(self, key: str, new: _Resolved | None) -> _Resolved | None:
        old = self._resolved.pop(key, None)
        if old is not None:
            for i in old.targets:
                s = self._selected_by.get(i)
                if s:
                    s.discard(key)
        if new is not None:
            self._resolved[key] = new
            for i in new.targets:
                self._selected_by[i].add(key)
            for w in new.warnings:
                if w not in self._warned:
                    self._log.warning("%s", w)
        # Each warning is logged once while it holds (messages name their policy, so no clashes).
        self._warned -= set(old.warnings) if old else set()
        self._warned |= set(new.warnings) if new else set()
        return old

    # ------------------------------------------------------------------ incremental bookkeeping

    def _policies_touching(self, pod: Pod) -> set[str]:
        """Policies whose resolution may change when ``pod`` appears or disappears."""
        out: set[str] = set()
        ns_labels = self._ns_labels(pod.namespace)
        if self._touch is None:
            self._touch = _TouchIndex.build(self._parsed)
        for key in self._touch.candidates(pod.namespace, pod.labels):
            parsed = self._parsed[key]
            if parsed.namespace == pod.namespace and parsed.pod_selector.matches(pod.labels):
                out.add(key)
                continue
            for r in (parsed.ingress or ()) + (parsed.egress or ()):
                egress_named = r.direction == "egress" and r.named_ports
                if not r.peers and egress_named:
                    out.add(key)
                    break
                if any(self._peer_matches_pod(parsed, p, pod, ns_labels, egress_named) for p in r.peers):
                    out.add(key)
                    break
        return out

    @staticmethod
    def _peer_matches_pod(pol: ParsedPolicy, p: PeerSpec, pod: Pod, ns_labels: Mapping[str, str],
                          egress_named: bool) -> bool:
        if p.kind == "cidr":
            return egress_named and any(CidrPeer(p.cidr or "", p.excepts).matches(None, ip) for ip in pod.ips)
        if p.namespace_selector is None:
            if pod.namespace != pol.namespace:
                return False
        elif not p.namespace_selector.matches(ns_labels):
            return False
        return p.pod_selector is None or p.pod_selector.matches(pod.labels)

    def _namespace_changed(self, name: str, ns: Namespace | None, old: Namespace | None) -> Delta:
        old_labels = self._ns_labels_cache.get(name)
        if old_labels is None:
            old_labels = old.effective_labels if old else {NS_NAME_LABEL: name}
        if ns is None:
            self.namespaces.pop(name, None)
        else:
            self.namespaces[name] = ns
        self._ns_labels_cache.pop(name, None)
        new_labels = self._ns_labels(name)
        if old_labels == new_labels:
            return {}
        self._sel_cache.clear()
        affected = set()
        for key, parsed in self._parsed.items():
            for r in (parsed.ingress or ()) + (parsed.egress or ()):
                if any(p.namespace_selector is not None
                       and (p.namespace_selector.matches(old_labels) or p.namespace_selector.matches(new_labels))
                       for p in r.peers):
                    affected.add(key)
                    break
        dirty: set[str] = set()
        self._reresolve(affected, dirty)
        return self._reassemble(dirty)

    def _reresolve(self, keys: set[str], dirty: set[str]) -> None:
        mirror_peers: list[Peer] = []
        for key in keys:
            parsed = self._parsed.get(key)
            new = self._resolve(parsed) if parsed is not None else None
            old = self._install(key, new)
            if old == new:
                continue
            for res in (old, new):
                if res is None:
                    continue
                dirty |= self._pods_of(res.targets, local_only=True)  # only local pods have an EndpointPolicy
                if self.default_deny:
                    mirror_peers.extend(res.peers())
        if mirror_peers:
            # Default deny: mirrored rules live on the endpoints this policy's peers reach.
            self._mirror = None
            dirty |= self._mirror_users(self._pods_matched_by(set(mirror_peers)))

    def _refresh_named_mirrors(self, keys: set[str], pods: tuple[Pod | None, ...], dirty: set[str]) -> None:
        """Default deny: a selected pod's own named ports feed the mirrors on its peers.

        Its identity-level resolution may be unchanged (so ``_reresolve`` saw no change) while the
        port numbers its peers must allow did change.
        """
        if not self.default_deny:
            return
        for key in keys:
            res = self._resolved.get(key)
            if res is None or not res.ingress_named:
                continue
            if any(p is not None and p.namespace == res.policy.namespace and res.policy.pod_selector.matches(p.labels)
                   for p in pods):
                self._mirror = None
                dirty |= self._mirror_users(self._pods_matched_by(res.peers()))

    def _mirror_users(self, keys: set[str]) -> set[str]:
        """The pods among ``keys`` with a direction no policy selects (only those carry mirrors)."""
        memo: dict[int, bool] = {}
        out = set()
        for k in keys:
            ident = self._pod_ident[k]
            uses = memo.get(ident)
            if uses is None:
                pols = [self._resolved[p].policy for p in self._selected_by.get(ident, ())]
                uses = memo[ident] = not (any(p.ingress is not None for p in pols)
                                          and any(p.egress is not None for p in pols))
            if uses:
                out.add(k)
        return out

    def _pods_matched_by(self, peers: Iterable[Peer]) -> set[str]:
        out: set[str] = set()
        for p in peers:
            if isinstance(p, IdentityPeer):
                out |= self._pods_of(p.identities)
            elif isinstance(p, AnyPeer):
                return set(self.pods)
            else:
                out |= {k for ip, k in self._ip_pod.items() if p.contains(self._address(ip))}
        return out

    def _reassemble(self, dirty: set[str]) -> Delta:
        delta: Delta = {}
        local = []
        for key in dirty:  # most of a large dirty set is other nodes' pods: no sort, no assembly
            pod = self.pods.get(key)
            if pod is not None and self._is_local(pod):
                local.append(key)
            elif key in self.endpoints:
                del self.endpoints[key]
                delta[key] = None
        for key in sorted(local):
            ep = self._assemble(key)
            if self.endpoints.get(key) != ep:
                self.endpoints[key] = ep
                delta[key] = ep
        return delta

    # ------------------------------------------------------------------ per-endpoint assembly

    def _assemble(self, key: str) -> EndpointPolicy:
        pod = self.pods[key]
        ident = self._pod_ident[key]
        selecting = sorted(self._selected_by.get(ident, ()))
        ing_pols = [k for k in selecting if self._resolved[k].policy.ingress is not None]
        eg_pols = [k for k in selecting if self._resolved[k].policy.egress is not None]
        if ing_pols:
            rules: list[Rule] = []
            for k in ing_pols:
                res = self._resolved[k]
                rules.extend(res.ingress_fixed)
                for r, peers in res.ingress_named:
                    ports = resolve_ports(r.ports, pod)
                    if ports:
                        rules.extend(Rule(p, ports, k, r.origin) for p in peers)
            ingress = DirectionPolicy(True, tuple(rules), tuple(ing_pols))
        elif self.default_deny:
            ingress = DirectionPolicy(True, self._mirror_index().ingress_for(ident, pod.ips))
        else:
            ingress = OPEN
        if eg_pols:
            egress = DirectionPolicy(True, tuple(r for k in eg_pols for r in self._resolved[k].egress),
                                     tuple(eg_pols))
        elif self.default_deny:
            egress = DirectionPolicy(True, self._mirror_index().egress_for(ident, pod.ips))
        else:
            egress = OPEN
        return EndpointPolicy(key, ident, pod.ip, pod.node, ingress, egress)

    def _mirror_index(self) -> _MirrorIndex:
        if self._mirror is None:
            self._mirror = _MirrorIndex.build(self)
        return self._mirror


class _MirrorIndex:
    """Default-deny support: rules copied onto the *other* end of a flow.

    In default-deny mode a direction that no policy selects is still isolated, but it admits what
    the peer's own policy explicitly allows: ``S -> D`` passes D's ingress when a policy selecting
    S allows it in S's egress rules, and vice versa. See docs/policy.md ("Default deny").
    """

    def __init__(self) -> None:
        self.by_ident: dict[str, dict[int, list[Rule]]] = {"ingress": defaultdict(list), "egress": defaultdict(list)}
        self.anyone: dict[str, list[Rule]] = {"ingress": [], "egress": []}
        self.cidr: dict[str, list[tuple[CidrPeer, Rule]]] = {"ingress": [], "egress": []}

    def _add(self, where: str, match: Peer, rule: Rule) -> None:
        if isinstance(match, IdentityPeer):
            for i in match.identities:
                self.by_ident[where][i].append(rule)
        elif isinstance(match, AnyPeer):
            self.anyone[where].append(rule)
        else:
            self.cidr[where].append((match, rule))

    @classmethod
    def build(cls, eng: PolicyEngine) -> _MirrorIndex:
        m = cls()
        for key in sorted(eng._resolved):
            res = eng._resolved[key]
            if not res.targets:
                continue
            selected = IdentityPeer(res.targets)
            if res.policy.egress is not None:
                for r in res.egress:
                    m._add("ingress", r.peer, Rule(selected, r.ports, key, "mirror:" + r.origin))
            if res.policy.ingress is not None:
                for r in res.ingress_fixed:
                    m._add("egress", r.peer, Rule(selected, r.ports, key, "mirror:" + r.origin))
                for rs, peers in res.ingress_named:
                    targets = sorted((k, True) for k in eng._pods_of(res.targets))
                    named = tuple(s for s in rs.ports if isinstance(s.port, str))
                    numeric = tuple(s for s in rs.ports if not isinstance(s.port, str))
                    mirrored = eng._per_destination_rules(named, targets, key, "mirror:" + rs.origin)
                    if numeric:
                        mirrored.append(Rule(selected, resolve_ports(numeric, None), key, "mirror:" + rs.origin))
                    for p in peers:
                        for mr in mirrored:
                            m._add("egress", p, mr)
        return m

    def _for(self, where: str, ident: int, ips: Iterable[str]) -> tuple[Rule, ...]:
        # A block holding either of a dual-stack pod's addresses mirrors onto the pod, whose set
        # serves both: the other end's own isolated direction still checks the address it is sent.
        rules = list(self.by_ident[where].get(ident, ())) + self.anyone[where]
        rules += [r for peer, r in self.cidr[where] if any(peer.matches(None, ip) for ip in ips)]
        seen: dict[Rule, None] = dict.fromkeys(rules)
        return tuple(sorted(seen, key=lambda r: (r.policy, r.origin, str(r.peer), str(r.ports))))

    def ingress_for(self, ident: int, ips: Iterable[str]) -> tuple[Rule, ...]:
        return self._for("ingress", ident, ips)

    def egress_for(self, ident: int, ips: Iterable[str]) -> tuple[Rule, ...]:
        return self._for("egress", ident, ips)



class _TouchIndex:
    """Which policies a pod change can possibly touch, so that a pod event does not scan them all.

    A policy is touched by a pod that its target selector picks, or that one of its peers picks
    (or, for egress with named ports, which resolve against the destination pods, any pod a
    peerless rule or an ipBlock peer reaches). Each such selector is filed under one label pair
    it requires (an ``In`` requirement: the pod must carry ``key=value`` for one of the values)
    and the namespace it is confined to (``None`` when a namespaceSelector lets it reach any), so
    a pod is looked up by its own label pairs and namespace only. Selectors that require no label
    pair (``{}``, ``Exists``, ``NotIn``) and the named-port cases are filed under the namespace
    alone. The exact test stays in ``PolicyEngine._policies_touching``: this only narrows the
    candidates, and every policy that can match a pod is among them.
    """

    def __init__(self) -> None:
        # (namespace or None, label key, label value) -> policy keys
        self.by_label: dict[tuple[str | None, str, str], set[str]] = defaultdict(set)
        # namespace or None -> policy keys with a selector that no label pair narrows
        self.unanchored: dict[str | None, set[str]] = defaultdict(set)

    @classmethod
    def build(cls, parsed: Mapping[str, ParsedPolicy]) -> _TouchIndex:
        idx = cls()
        for key, pol in parsed.items():
            idx._file(key, pol.namespace, pol.pod_selector)
            for r in (pol.ingress or ()) + (pol.egress or ()):
                egress_named = r.direction == "egress" and r.named_ports
                if not r.peers and egress_named:
                    idx.unanchored[None].add(key)
                for p in r.peers:
                    if p.kind == "cidr":
                        if egress_named:
                            idx.unanchored[None].add(key)
                        continue
                    ns = pol.namespace if p.namespace_selector is None else None
                    idx._file(key, ns, p.pod_selector)
        return idx

    def _file(self, key: str, namespace: str | None, sel: LabelSelector | None) -> None:
        anchor = next((r for r in sel.requirements if r.operator == "In"), None) if sel is not None else None
        if anchor is None:
            self.unanchored[namespace].add(key)
            return
        for v in anchor.values:
            self.by_label[(namespace, anchor.key, v)].add(key)

    def candidates(self, namespace: str, labels: Mapping[str, str]) -> set[str]:
        out = set(self.unanchored.get(namespace, ())) | self.unanchored.get(None, set())
        for k, v in labels.items():
            out |= self.by_label.get((namespace, k, v), set())
            out |= self.by_label.get((None, k, v), set())
        return out
