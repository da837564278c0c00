#!/usr/bin/env bash
# The main job on the included example: a crash healed live, then reloaded from its
# overlay in a fresh process with healing off.
#   scripts/demo.sh [PYTHON]     (default: python3; needs 3.11+)
set -euo pipefail
cd "$(dirname "$0")/.."
py=${1:-python3}
[ -x .venv-demo/bin/python ] || "$py" -m venv .venv-demo
.venv-demo/bin/python -m pip install -q -e . >/dev/null
out=$(mktemp -d)
echo "== 1. plain python: the example crashes"
.venv-demo/bin/python examples/inventory/app.py || true
echo; echo "== 2. codesuture run: healed live, overlays written to $out"
.venv-demo/bin/codesuture run --overlays "$out" examples/inventory/app.py
echo; echo "== 3. a new process loads the overlay at import (healing off): no new patch"
.venv-demo/bin/python -m codesuture.boot --overlays "$out" --no-heal examples/inventory/app.py
echo; echo "overlays:"; ls "$out"
