"""The chaos soak, long form: a 3-node lab under pod churn, label and policy changes, probes
against the reference evaluator and daemon kills, for as long as asked (tests/support/chaos.py
has what it does and checks; tests/lab/test_soak.py is the short form in the test suite).

  .venv/bin/python -m bench.soak --minutes 30 --seed 7
  .venv/bin/python -m bench.soak --minutes 10 --mode native     # adds bgpd/bfdd SIGKILLs

Prints the counts (operations, kills, probes, violations) and writes them, with the machine's
load average before and after, to bench/results/soak-<mode>.json. Exits 1 on any violation.
Needs root (network namespaces, BPF).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import save  # noqa: E402
from tests.support.chaos import Soak  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--mode", choices=("overlay", "native"), default="overlay")
    ap.add_argument("--churn-workers", type=int, default=2, help="concurrent CNI ADD/DEL workers")
    ap.add_argument("--kill-every", type=float, default=20.0, help="mean seconds between kills")
    ap.add_argument("--max-churn-pods", type=int, default=8)
    args = ap.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="novanet-soak-") as tmp:
        soak = Soak(Path(tmp), seed=args.seed, mode=args.mode, churn_workers=args.churn_workers,
                    kill_every=args.kill_every, max_churn_pods=args.max_churn_pods)
        t0 = time.monotonic()
        try:
            soak.up()
            rep = soak.run(args.minutes * 60)
        finally:
            soak.down()
    print(rep.summary())
    path = save(f"soak-{args.mode}", {**rep.to_dict(), "minutes": args.minutes, "wallSeconds": round(time.monotonic() - t0, 1),
                                      "loadavgBefore": load_before, "loadavgAfter": os.getloadavg(),
                                      "command": " ".join(["python -m bench.soak", *sys.argv[1:]])})
    print(f"results in {path}")
    return 1 if rep.violations else 0


if __name__ == "__main__":
    sys.exit(main())
