"""Kubernetes label selectors (``metav1.LabelSelector``): parsed once, matched many times.

A parsed selector is hashable so the compiler can cache "which identities does this selector
pick" across the many policies that share selectors (``{}``, ``pod: a`` …).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        op = self.operator
        if op == "In":
            return labels.get(self.key) in self.values
        if op == "NotIn":
            # A missing key satisfies NotIn (Kubernetes labels.Selector semantics).
            return labels.get(self.key) not in self.values
        if op == "Exists":
            return self.key in labels
        return self.key not in labels  # DoesNotExist


@dataclass(frozen=True)
class LabelSelector:
    """matchLabels are folded into ``In`` requirements with one value (same meaning)."""

    requirements: tuple[Requirement, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not self.requirements

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    def __str__(self) -> str:
        """The ``kubectl -l`` form, e.g. ``app=web,tier in (a,b),!legacy``."""
        parts = []
        for r in self.requirements:
            vals = ",".join(sorted(r.values))
            if r.operator == "In" and len(r.values) == 1:
                parts.append(f"{r.key}={vals}")
            elif r.operator == "In":
                parts.append(f"{r.key} in ({vals})")
            elif r.operator == "NotIn":
                parts.append(f"{r.key} notin ({vals})")
            elif r.operator == "Exists":
                parts.append(r.key)
            else:
                parts.append(f"!{r.key}")
        return ",".join(parts) if parts else "<all>"


EVERYTHING = LabelSelector()


def parse_selector(raw: Mapping[str, Any] | None) -> LabelSelector:
    """Build a selector from an already validated dict (see ``validate.py``)."""
    if not raw:
        return EVERYTHING
    reqs: list[Requirement] = []
    for k, v in sorted((raw.get("matchLabels") or {}).items()):
        reqs.append(Requirement(str(k), "In", frozenset({str(v)})))
    for e in raw.get("matchExpressions") or []:
        reqs.append(Requirement(e["key"], e["operator"], frozenset(str(x) for x in e.get("values") or ())))
    # Sorted + deduplicated so equal selectors written differently share one cache entry.
    return LabelSelector(tuple(sorted(set(reqs), key=lambda r: (r.key, r.operator, sorted(r.values)))))
