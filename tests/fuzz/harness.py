"""A time-budgeted fuzz loop on top of Hypothesis, with case counts and distinct-error reports.

Hypothesis stops after a number of examples, not after a time, so a target runs rounds of
``ROUND`` examples, each round with its own derived seed, until its budget is spent: the same
seed and budget replay the same inputs (the count of cases depends on machine speed, the
sequence does not). Shrinking is off: a failing input is recorded with its signature (exception
type and the innermost NovaNet frame) and the loop goes on, so one run reports every distinct
error instead of stopping at the first.

Budgets: ``NOVANET_FUZZ_SECONDS`` overrides every target's budget (bench/fuzz.py sets minutes),
``NOVANET_FUZZ_SEED`` the base seed, and ``NOVANET_FUZZ_REPORT`` a directory where each target
writes ``<target>.json`` with its counts.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hseed
from hypothesis import strategies as st

ROUND = 200
MIN_CASES = 25


class Finding(Exception):
    """A check found a defect: the input was mishandled (wrong error, no field named, state damaged)."""


@dataclass
class Report:
    target: str
    cases: int = 0
    accepted: int = 0
    rejected: int = 0
    seconds: float = 0.0
    seed: int = 0
    # signature -> (message, a short repr of one input that produced it)
    findings: dict[str, tuple[str, str]] = field(default_factory=dict)

    def summary(self) -> str:
        s = (f"fuzz {self.target}: {self.cases} cases in {self.seconds:.1f} s (accepted {self.accepted}, "
             f"rejected with a clear error {self.rejected}), {len(self.findings)} distinct errors")
        for sig, (msg, example) in self.findings.items():
            s += f"\n  {sig}: {msg}\n    input: {example}"
        return s

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "cases": self.cases, "accepted": self.accepted, "rejected": self.rejected,
                "seconds": round(self.seconds, 1), "seed": self.seed,
                "findings": [{"signature": k, "message": m, "input": e} for k, (m, e) in self.findings.items()]}


def _signature(exc: BaseException) -> str:
    if isinstance(exc, Finding):
        return f"Finding: {str(exc).splitlines()[0][:120]}"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/novanet" in f.filename or "/plugins/" in f.filename]
    where = f"{Path(frames[-1].filename).name}:{frames[-1].name}:{frames[-1].lineno}" if frames else "?"
    return f"{type(exc).__name__} in {where}"


def budget(default: float) -> float:
    return float(os.environ.get("NOVANET_FUZZ_SECONDS") or default)


def run(target: str, strategy: st.SearchStrategy[Any], check: Callable[[Any], bool], seconds: float,
        between: Callable[[], None] | None = None) -> Report:
    """Feed ``strategy``'s inputs to ``check`` for ``seconds``.

    ``check(x)`` returns True if the input was accepted and False if it was rejected with a
    proper error; it raises (Finding or anything else) when the input exposed a defect.
    ``between``, if given, runs after every round (a daemon health check, say) and raises
    Finding if something is wrong.
    """
    base = int(os.environ.get("NOVANET_FUZZ_SEED") or 0)
    rep = Report(target=target, seed=base)
    start = time.monotonic()
    deadline = start + seconds

    def one(x: Any) -> None:
        if time.monotonic() > deadline and rep.cases >= MIN_CASES:
            return
        rep.cases += 1
        try:
            if check(x):
                rep.accepted += 1
            else:
                rep.rejected += 1
        except Exception as e:  # every defect is recorded, then the loop goes on
            sig = _signature(e)
            if sig not in rep.findings:
                rep.findings[sig] = (f"{type(e).__name__}: {str(e)[:300]}", repr(x)[:400])

    rnd = late = 0
    # The budget is wall time, but on a loaded machine building the strategy alone can eat it: a
    # few rounds past the deadline make sure MIN_CASES inputs were tried before the run counts.
    while time.monotonic() < deadline or (rep.cases < MIN_CASES and late < 3):
        late += time.monotonic() >= deadline
        fn = settings(max_examples=ROUND, deadline=None, database=None, phases=[Phase.generate],
                      suppress_health_check=list(HealthCheck))(hseed(base * 1_000_003 + rnd)(given(strategy)(one)))
        fn()
        rnd += 1
        if between is not None:
            try:
                between()
            except Exception as e:
                rep.findings.setdefault(_signature(e), (f"{type(e).__name__}: {str(e)[:300]}", f"after round {rnd}"))
    rep.seconds = time.monotonic() - start
    out = os.environ.get("NOVANET_FUZZ_REPORT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / f"{target}.json").write_text(json.dumps(rep.to_dict(), indent=2))
    print(rep.summary())
    return rep


def assert_clean(rep: Report) -> None:
    assert rep.cases > 0, f"fuzz {rep.target}: no case ran"
    assert not rep.findings, rep.summary()
