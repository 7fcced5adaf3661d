"""One atheris (libFuzzer) target, run by bench/fuzz.py in its own process:

  python -m bench.fuzz_atheris TARGET SECONDS REPORT_JSON WORKDIR

The parsers are imported under ``atheris.instrument_imports()`` so libFuzzer is guided by their
coverage; the contract checks are the test suite's (tests/fuzz/targets.py). An input that breaks
a contract is recorded by signature instead of ending the run, so one run reports every distinct
error; the report is written every 2000 cases and when the budget is spent.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import atheris

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

with atheris.instrument_imports(include=["novanet_core", "novanet_lab", "yaml"]):
    import yaml

    import novanet_core.cni.client
    import novanet_core.config.loader
    import novanet_core.policy.validate
    import novanet_core.state.model  # noqa: F401

from tests.fuzz import harness, seeds, targets  # noqa: E402


def _checks(workdir: str) -> tuple[dict[str, Any], dict[str, list[str]]]:
    world = targets.PolicyWorld()
    cni = targets.make_cni_check(workdir)
    commands = ("ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION")

    def manifest(text: str) -> bool:
        try:
            docs = list(yaml.safe_load_all(text))
        except yaml.YAMLError:
            return False
        # what the manifest source does with a file: every document, rejected ones named
        ok = True
        for d in docs:
            if d is not None:
                ok = targets.check_manifest_object(d) and ok
        return ok

    def policy(text: str) -> bool:
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError:
            return False
        if not isinstance(doc, dict):
            return False
        return world.check((True, doc))

    def cni_stdin(data: bytes) -> bool:
        env = dict(seeds.CNI_ENV, CNI_COMMAND=commands[data[0] % len(commands)] if data else "ADD")
        return cni((env, data[1:].decode("utf-8", "replace")))

    checks = {
        "lab-spec-text": lambda d: targets.check_lab_spec(d.decode("utf-8", "replace")),
        "manifest-text": lambda d: manifest(d.decode("utf-8", "replace")),
        "agent-config-text": lambda d: targets.check_agent_config((d.decode("utf-8", "replace"), {})),
        "cni-stdin": cni_stdin,
        "networkpolicy-text": lambda d: policy(d.decode("utf-8", "replace")),
    }
    corpus = {
        "lab-spec-text": [yaml.safe_dump(s) for s in seeds.lab_specs()],
        "manifest-text": [yaml.safe_dump_all(seeds.MANIFESTS)] + [yaml.safe_dump(m) for m in seeds.MANIFESTS],
        "agent-config-text": [yaml.safe_dump(seeds.AGENT_CONFIG), json.dumps(seeds.AGENT_CONFIG)],
        "cni-stdin": ["\x00" + json.dumps(seeds.CNI_CONF), "\x01" + json.dumps(seeds.CNI_CONF)],
        "networkpolicy-text": [yaml.safe_dump(seeds.POLICY["spec"]), yaml.safe_dump(seeds.DENY_ALL["spec"])],
    }
    return checks, corpus


def main() -> None:
    target, seconds, report_path, workdir = sys.argv[1], float(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
    checks, corpus = _checks(workdir)
    check = checks[target]
    cdir = Path(workdir) / "corpus"
    cdir.mkdir(exist_ok=True)
    for i, text in enumerate(corpus[target]):
        (cdir / f"seed{i}").write_bytes(text.encode())
    rep = harness.Report(target=f"atheris:{target}")
    t0 = time.monotonic()

    def write() -> None:
        rep.seconds = time.monotonic() - t0
        report_path.write_text(json.dumps(rep.to_dict(), indent=2))

    def one(data: bytes) -> None:
        if time.monotonic() - t0 > seconds:
            write()
            print(rep.summary(), flush=True)
            os._exit(0)
        rep.cases += 1
        try:
            if check(data):
                rep.accepted += 1
            else:
                rep.rejected += 1
        except Exception as e:  # recorded; libFuzzer must not stop at the first one
            sig = harness._signature(e)
            if sig not in rep.findings:
                rep.findings[sig] = (f"{type(e).__name__}: {str(e)[:300]}", repr(data[:400]))
        if rep.cases % 2000 == 0:
            write()

    atheris.Setup([sys.argv[0], str(cdir), f"-max_total_time={int(seconds) + 30}", "-rss_limit_mb=4096",
                   "-timeout=60", "-max_len=8192"], one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
