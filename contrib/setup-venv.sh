#!/usr/bin/env bash
# Creates .venv with NovaNet, every first-party plugin (each as its own distribution) and the
# test tools. BCC comes from Debian (python3-bpfcc); a one-module shim exposes only `bcc`
# to the venv rather than all of Debian's dist-packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
SITE=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
mkdir -p .venv/bcc-shim
ln -sfn /usr/lib/python3/dist-packages/bcc .venv/bcc-shim/bcc
echo "$(pwd)/.venv/bcc-shim" > "$SITE/novanet_bcc_debian.pth"
STAMP=.venv/.novanet-installed
SRC_HASH=$(cat pyproject.toml plugins/*/pyproject.toml | sha256sum | cut -c1-16)
if [ "$(cat "$STAMP" 2>/dev/null)" != "$SRC_HASH" ]; then
  .venv/bin/pip install -q --disable-pip-version-check -e ".[test,kubernetes,bench]"
  for p in plugins/*/; do .venv/bin/pip install -q --disable-pip-version-check -e "$p"; done
  # Helm's Go library for the chart lint (tests/unit/test_chart.py). Its wheel says Python >= 3.12
  # but carries a plain C shared library that cffi loads under 3.11 as well.
  .venv/bin/pip install -q --disable-pip-version-check --ignore-requires-python "helm-sdkpy>=0.1.32" cffi
  echo "$SRC_HASH" > "$STAMP"
fi
