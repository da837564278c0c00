#!/usr/bin/env bash
# Run the test suite on each Python given (default: 3.11 3.12 3.13), each in its own
# virtual environment (.venv-X.Y) with the project installed from pyproject.toml.
#   scripts/test.sh [3.11 3.12 3.13] [-- pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

versions=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do versions+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
[ ${#versions[@]} -eq 0 ] && versions=(3.11 3.12 3.13)

find_python() {  # $1 = X.Y -> path of an interpreter of that version
  local v=$1 p
  if command -v pyenv >/dev/null 2>&1; then
    p=$(ls -d "$(pyenv root)/versions/$v".* 2>/dev/null | sort -V | tail -n 1)
    if [ -n "$p" ] && [ -x "$p/bin/python$v" ]; then echo "$p/bin/python$v"; return; fi
  fi
  command -v "python$v" || { echo "no Python $v found (install it, e.g. with pyenv)" >&2; return 1; }
}

status=0
for v in "${versions[@]}"; do
  py=$(find_python "$v")
  venv=".venv-$v"
  echo "== Python $v ($py)"
  [ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
  "$venv/bin/python" -m pip install -q -e '.[test]'
  "$venv/bin/python" -m pytest "$@" || status=1
done
exit $status
