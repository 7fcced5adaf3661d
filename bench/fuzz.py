"""The long fuzz run: every target of tests/fuzz for minutes instead of seconds.

Two engines:

* hypothesis (default): the structure-aware targets of the test suite (mutated valid documents,
  framing and params on the daemons' sockets) with a larger budget;
* atheris: coverage-guided byte-level fuzzing of the text parsers (lab spec, manifest YAML,
  agent config, CNI stdin, NetworkPolicy YAML), seeded with the same valid documents, each target
  in its own process (libFuzzer owns the process). A crash is not the end of the run: every input
  that broke a target's contract is recorded by signature and the run goes on.

  .venv/bin/python -m bench.fuzz --seconds 300                 # hypothesis, every target
  .venv/bin/python -m bench.fuzz --engine atheris --seconds 300
  .venv/bin/python -m bench.fuzz --engine both --seconds 120 --no-daemons

Counts per target go to bench/results/fuzz.json (cases, accepted, rejected, distinct findings),
and the run exits non-zero if any target found something. The daemon targets need root (a real
agent and dataplane in a netns).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import save  # noqa: E402

PARSER_TARGETS = ("manifest-objects", "manifest-files", "networkpolicy", "agent-config", "lab-spec", "cni-client")
ATHERIS_TARGETS = ("lab-spec-text", "manifest-text", "agent-config-text", "cni-stdin", "networkpolicy-text")


def hypothesis_parsers(seconds: float, only: set[str] | None) -> list[dict[str, Any]]:
    from tests.fuzz import harness, targets

    out = []
    runs = {
        "manifest-objects": lambda: harness.run("manifest-objects", targets.manifest_objects,
                                                targets.check_manifest_object, seconds),
        "networkpolicy": lambda: harness.run("networkpolicy", targets.policy_specs(), targets.PolicyWorld().check,
                                             seconds),
        "agent-config": lambda: harness.run("agent-config", targets.agent_configs(), targets.check_agent_config,
                                            seconds),
        "lab-spec": lambda: harness.run("lab-spec", targets.lab_specs(), targets.check_lab_spec, seconds),
    }
    for name, fn in runs.items():
        if only is None or name in only:
            out.append(fn().to_dict())
    if only is None or "manifest-files" in only:
        d = targets.ManifestDir()
        try:
            out.append(harness.run("manifest-files", targets.manifest_files(), d.check, seconds).to_dict())
        finally:
            d.close()
    if only is None or "cni-client" in only:
        with tempfile.TemporaryDirectory(prefix="novanet-fuzz-cni-") as tmp:
            out.append(harness.run("cni-client", targets.cni_inputs(), targets.make_cni_check(tmp), seconds).to_dict())
    return out


def hypothesis_daemons(seconds: float) -> list[dict[str, Any]]:
    from tests.fuzz.daemons import FuzzNode, run_all
    from tests.support.cni_clients import build_c_binary

    f = FuzzNode()
    try:
        f.start()
        with tempfile.TemporaryDirectory(prefix="novanet-fuzz-cni-") as tmp:
            return [r.to_dict() for r in run_all(f, tmp, seconds, str(build_c_binary()))]
    finally:
        f.close()


def atheris_run(target: str, seconds: float) -> dict[str, Any]:
    """One target in its own process: ``python -m bench.fuzz_atheris TARGET SECONDS REPORT``."""
    with tempfile.TemporaryDirectory(prefix="novanet-atheris-") as tmp:
        report = Path(tmp) / "report.json"
        p = subprocess.run([sys.executable, "-m", "bench.fuzz_atheris", target, str(seconds), str(report), tmp],
                           cwd=ROOT, capture_output=True, text=True, timeout=seconds * 3 + 120)
        if not report.exists():
            return {"target": f"atheris:{target}", "error": f"exit {p.returncode}: {p.stderr[-2000:]}"}
        return json.loads(report.read_text())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=300, help="budget per target")
    ap.add_argument("--engine", choices=("hypothesis", "atheris", "both"), default="hypothesis")
    ap.add_argument("--targets", nargs="*", help=f"subset: {', '.join(PARSER_TARGETS + ATHERIS_TARGETS)}, daemons")
    ap.add_argument("--no-daemons", action="store_true", help="skip the daemon socket targets (they need root)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    os.environ["NOVANET_FUZZ_SEED"] = str(args.seed)
    only = set(args.targets) if args.targets else None
    t0 = time.monotonic()
    results: list[dict[str, Any]] = []
    if args.engine in ("hypothesis", "both"):
        results += hypothesis_parsers(args.seconds, only)
        if not args.no_daemons and (only is None or "daemons" in only):
            results += hypothesis_daemons(args.seconds)
    if args.engine in ("atheris", "both"):
        for t in ATHERIS_TARGETS:
            if only is None or t in only:
                r = atheris_run(t, args.seconds)
                print(f"atheris {t}: {r.get('cases')} cases, {len(r.get('findings', []))} distinct errors"
                      + (f" ERROR {r['error']}" if "error" in r else ""))
                results.append(r)
    total = sum(r.get("cases", 0) for r in results)
    bad = [r for r in results if r.get("findings") or "error" in r]
    path = save("fuzz", {"engine": args.engine, "secondsPerTarget": args.seconds, "seed": args.seed,
                         "wallSeconds": round(time.monotonic() - t0, 1), "casesTotal": total,
                         "targets": results, "command": " ".join(sys.argv)})
    print(f"{len(results)} targets, {total} cases, {sum(len(r.get('findings', [])) for r in results)} distinct "
          f"errors; results in {path}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
