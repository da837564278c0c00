#!/usr/bin/env bash
# The main job on the included example: a crash healed live, the overlay reloaded in a
# fresh process, then signed, bundled and loaded the way a production deploy does.
#   scripts/demo.sh [PYTHON]     (default: python3; needs 3.11+)
set -euo pipefail
cd "$(dirname "$0")/.."
py=${1:-python3}
[ -x .venv-demo/bin/python ] || "$py" -m venv .venv-demo
.venv-demo/bin/python -m pip install -q -e '.[cli]' >/dev/null   # the app side needs only '.'; the review steps need click (the cli extra)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export CODESUTURE_STATE_DIR="$work/state"
cs=.venv-demo/bin/codesuture
app=examples/inventory/app.py
echo "== 1. plain python: the example crashes"
.venv-demo/bin/python "$app" || true
echo; echo "== 2. codesuture run (dev mode): healed live, overlays written to $work/overlays"
"$cs" run --overlays "$work/overlays" "$app"
echo; echo "== 3. a new process loads the overlay at import (healing off): no new patch"
.venv-demo/bin/python -m codesuture.boot --overlays "$work/overlays" --no-heal "$app"
echo; echo "== 4. review: sign (after rebuilding each overlay from source), verify, bundle"
"$cs" keygen --private-key "$work/private/demo.key" --public-key "$work/keys/demo.pem" >/dev/null
"$cs" explain "$work/overlays"
"$cs" sign --key "$work/private/demo.key" --app-root examples/inventory "$work/overlays"
"$cs" verify --keys "$work/keys" "$work/overlays"
"$cs" bundle create "$work/overlays" -o "$work/deploy.cso"
echo; echo "== 5. production: load the signed bundle only (prod mode: no healing, nothing written)"
.venv-demo/bin/python -m codesuture.boot --overlays "$work/deploy.cso" --keys "$work/keys" --require-overlays "$app"
