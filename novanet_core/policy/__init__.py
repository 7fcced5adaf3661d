"""Kubernetes NetworkPolicy: validation, compilation to a per-endpoint form, evaluation.

Backend-neutral and pure (no kernel access); datapaths consume :class:`EndpointPolicy`.
"""

from novanet_core.policy.compiled import (
    AnyPeer,
    CidrPeer,
    DirectionPolicy,
    DirectionResult,
    EndpointPolicy,
    IdentityPeer,
    PortRange,
    Rule,
)
from novanet_core.policy.engine import Delta, PolicyEngine, resolve_ports
from novanet_core.policy.evaluate import Verdict, evaluate
from novanet_core.policy.spec import ParsedPolicy, parse_policy
from novanet_core.policy.validate import PolicyValidationError, check_spec, validate_spec

__all__ = [
    "AnyPeer",
    "CidrPeer",
    "Delta",
    "DirectionPolicy",
    "DirectionResult",
    "EndpointPolicy",
    "IdentityPeer",
    "ParsedPolicy",
    "PolicyEngine",
    "PolicyValidationError",
    "PortRange",
    "Rule",
    "Verdict",
    "check_spec",
    "evaluate",
    "parse_policy",
    "resolve_ports",
    "validate_spec",
]
