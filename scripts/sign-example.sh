#!/usr/bin/env bash
# Regenerate and re-sign the committed example overlays (overlays/, keys/) with a NEW
# throwaway key, as keys/README.md describes: heal examples/inventory on 3.11, 3.12 and
# 3.13, sign the folder (each overlay rebuilt on its own interpreter), verify, copy in.
# Needs .venv-3.11/.venv-3.12/.venv-3.13 (scripts/test.sh makes them). Prints the new
# key id; update the table in keys/README.md with it.
set -euo pipefail
cd "$(dirname "$0")/.."
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export CODESUTURE_STATE_DIR="$work/state"
for v in 3.11 3.12 3.13; do
    ".venv-$v/bin/python" -m codesuture run --ttl 3650 --overlays "$work/overlays" examples/inventory/app.py >/dev/null
done
py=.venv-3.12/bin/python
"$py" -m codesuture keygen --private-key "$work/private/codesuture-example.key" --public-key "$work/pub/codesuture-example.pem"
"$py" -m codesuture sign --ttl 3650 --key "$work/private/codesuture-example.key" --app-root examples/inventory \
    --set-name inventory --python .venv-3.11/bin/python --python .venv-3.13/bin/python "$work/overlays"
"$py" -m codesuture verify --keys "$work/pub" "$work/overlays"
rm -f overlays/stock.* overlays/overlays.manifest.dsse.json
cp "$work"/overlays/stock.* "$work/overlays/overlays.manifest.dsse.json" overlays/
cp "$work/pub/codesuture-example.pem" keys/
"$py" - <<'PY'
from pathlib import Path
from codesuture.trust.keys import keyid, load_public_key_pem
p = Path("keys/codesuture-example.pem")
print("new key id:", keyid(load_public_key_pem(p.read_bytes(), p)))
PY
