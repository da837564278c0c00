"""What the first firing of a loaded overlay's guard imports in a fresh prod process.

Every worker of a fleet pays the first firing of each guard once, in the request or job
that hits it; what it imports there is heal-side code a prod process never runs (the
diagnosis, the synthesis, the guard families, ``inspect``/``ast`` for annotations) or,
for a guard whose value is data, the value-flow model with ``bytecode``.

One app is healed with ``codesuture run`` (real crashes, real overlays), signed with
the real CLI (``keygen``, ``sign --set-name``), then started in prod exactly as a
deploy does: ``python -m codesuture.boot --keys keys --require-signed --overlays
overlays main.py``. The app makes its guards fire and prints, from its own
``sys.modules`` after the firing, which of the watched modules were imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from heal_helpers import clean_env

PY = sys.executable

#: ``data.total``: the missing key's value is data in its own frame (appended, summed):
#: an EAFP-only firing. ``returned.get``: the value is returned to its caller, which
#: stores it (the value-flow walk into the caller, consumer first).
MODULES = {
    "data": '''"""A data guard: the looked-up value is appended, never returned or tested."""


def total(d, out):
    n = d["count"]
    out.append(n)
    return len(out)
''',
    "returned": '''"""A returning guard: the looked-up value is returned to the caller."""


def get(d):
    return d["name"]
''',
}
#: Crash each module once (``codesuture run`` heals and replays each).
HEAL = '''import data, returned
out = []
data.total({"other": 1}, out)
returned.get({"other": "x"})
'''
#: The watched modules: in sys.modules before the firing, after it, and the results.
APP = '''import json, sys
import data, returned
WATCH = {watch!r}
before = sorted(m for m in WATCH if m in sys.modules)
out = []
n = data.total({{"other": 1}}, out)
after_data = sorted(m for m in WATCH if m in sys.modules)
{returned_call}
after_all = sorted(m for m in WATCH if m in sys.modules)
print("RESULT " + json.dumps({{"before": before, "after_data": after_data, "after_all": after_all,
                               "out": out, "n": n, "value": value}}))
'''
#: Heal-side modules a prod firing must not import.
HEAL_SIDE = ("codesuture.crash.diagnose", "codesuture.crash.site", "codesuture.patch.synthesize",
             "codesuture.guards", "codesuture.guards.families", "codesuture.guards.base", "codesuture.guards.calls",
             "codesuture.runtime.healer", "codesuture.patch.swap")
#: What only the value-flow model of a returned value needs.
FLOW_SIDE = ("bytecode", "codesuture.patch.flow", "dataclasses", "inspect", "ast", "typing")
WATCH = (*HEAL_SIDE, *FLOW_SIDE, "codesuture.runtime.events", "codesuture.runtime.callers")


def _run(args: list, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([os.fspath(a) for a in args], cwd=cwd, env=clean_env(), capture_output=True, text=True,
                          timeout=120)


@pytest.fixture(scope="module")
def signed_app(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("firing")
    app = root / "app"
    app.mkdir()
    (app / "pyproject.toml").write_text('[project]\nname = "firingapp"\n')
    for name, text in MODULES.items():
        (app / f"{name}.py").write_text(text)
    (app / "heal.py").write_text(HEAL)
    p = _run([PY, "-m", "codesuture", "run", "--retries", "4", "--overlays", "overlays", "heal.py"], app)
    assert p.returncode == 0, p.stdout + p.stderr
    assert len(list((app / "overlays").glob("*.overlay"))) == 2, p.stderr
    private = root / "private"
    private.mkdir()
    (app / "keys").mkdir()
    p = _run([PY, "-m", "codesuture", "keygen", "--private-key", private / "k.key", "--public-key", "keys/k.pem"], app)
    assert p.returncode == 0, p.stdout + p.stderr
    p = _run([PY, "-m", "codesuture", "sign", "--key", private / "k.key", "--app-root", app, "--set-name", "firing",
              "overlays"], app)
    assert p.returncode == 0, p.stdout + p.stderr
    return app


def _start(app: Path, returned_call: str) -> dict:
    (app / "main.py").write_text(APP.format(watch=WATCH, returned_call=returned_call))
    p = _run([PY, "-m", "codesuture.boot", "--keys", "keys", "--require-signed", "--overlays", "overlays", "main.py"],
             app)
    assert p.returncode == 0, p.stdout + p.stderr
    lines = [line for line in p.stdout.splitlines() if line.startswith("RESULT ")]
    assert len(lines) == 1, p.stdout + p.stderr
    assert "2 overlays loaded" in p.stderr, p.stderr
    return json.loads(lines[0][len("RESULT "):])


def test_a_data_guard_firing_imports_no_flow_model_and_no_heal_side(signed_app):
    r = _start(signed_app, "value = None")
    assert r["out"] == [0] and r["n"] == 1  # the guard fired: the missing count is 0 (the dict's values are ints)
    assert "codesuture.runtime.events" not in r["before"]  # nothing of the slow path before the firing
    assert "codesuture.runtime.events" in r["after_data"] and "codesuture.runtime.callers" in r["after_data"]
    new = set(r["after_data"]) - set(r["before"])
    assert not new & set(FLOW_SIDE), new  # bytecode, the flow model, inspect/ast/typing
    assert not new & set(HEAL_SIDE), new


def test_a_returning_guard_firing_imports_the_flow_model_but_no_heal_side(signed_app):
    r = _start(signed_app, "value = returned.get({'other': 'x'})")
    assert r["value"] == ""  # returned to a store: data, its default typed by the dict's str values
    new = set(r["after_all"]) - set(r["after_data"])
    assert {"bytecode", "codesuture.patch.flow"} <= new  # the callers' value-flow steps need the graph
    assert not set(r["after_all"]) & set(HEAL_SIDE), r["after_all"]
