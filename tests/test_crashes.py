"""Real crashes in released PyPI packages (``../shared/crashes``), healed end to end.

For each case and the running Python: a throwaway venv (see crash_venvs.py) with the
case's package installed, then, in a copy of the case folder:

1. ``python trigger.py`` crashes with the case's exception;
2. ``python -m codesuture run --overlays D trigger.py`` exits 0 and writes an overlay
   for the package's own module (stem ``<module>.<cache tag>.<source hash>``) whose
   metadata names its source portably (``site-packages:<path>``);
3. ``python -m codesuture.boot --overlays D --no-heal trigger.py`` exits 0 from that
   overlay alone (no new patch, the store unchanged).

Whether the healed output equals the upstream fix's output (``fixed_version_behaviour``)
is recorded, not asserted: guards return documented defaults, which can differ from
what upstream chose. The table is printed at the end of the run (see conftest.py) and
written to ``$CODESUTURE_CRASH_REPORT`` when that is set.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from crash_venvs import HERE_VERSION, SKIP_MSG, CrashCase, VenvError, case_venv, load_cases
from heal_helpers import CRASH_REPORT, TAG, boot, heal, overlays_in, plain, snapshot

pytestmark = pytest.mark.crashes

CASES = load_cases()


@pytest.fixture(params=CASES or [None], ids=[c.id for c in CASES] or ["<no shared folder>"])
def case(request: pytest.FixtureRequest) -> CrashCase:
    if request.param is None:
        pytest.skip(SKIP_MSG)
    reason = request.param.skip_reason()
    if reason:
        pytest.skip(reason)
    return request.param


def test_real_crash(case: CrashCase, crash_venv_dir: Path, tmp_path: Path) -> None:
    row = {"case": case.id, "python": HERE_VERSION, "plain rc": None, "run rc": None, "boot rc": None,
           "guard": "", "equals upstream": None, "boot output = run output": None}
    CRASH_REPORT.append(row)
    try:
        vpy = str(case_venv(case, crash_venv_dir))
    except VenvError as exc:
        pytest.fail(str(exc))

    work = tmp_path / case.id
    shutil.copytree(case.path, work)
    trigger = work / case.trigger.name
    overlays = tmp_path / "overlays"

    crashed = plain(trigger, python=vpy, cwd=work)
    row["plain rc"] = crashed.returncode
    assert crashed.returncode != 0, str(crashed)
    assert re.search(rf"^{case.exception}\b", crashed.stderr, re.M), str(crashed)

    healed = heal(trigger, overlays, python=vpy, cwd=work)
    row["run rc"] = healed.returncode
    patched = [line for line in healed.stderr.splitlines() if line.startswith("codesuture: patched ")]
    row["guard"] = ", ".join(m.group(1) for line in patched if (m := re.search(r": (\w+)(?:/\w+)? on `", line)))
    expected = case.data.get("fixed_version_behaviour", {}).get("stdout")
    row["equals upstream"] = healed.stdout == expected if expected is not None else None
    row["run stdout"] = healed.stdout
    assert healed.returncode == 0, str(healed)
    assert patched, str(healed)
    names = [n for n in overlays_in(overlays) if n.startswith(f"{case.module}.{TAG}.")]
    assert names, (overlays_in(overlays), str(healed))
    meta = json.loads((overlays / names[0]).with_suffix(".json").read_text())
    assert meta["origin"] == "site-packages:" + case.data["innermost_frame"]["file"], meta["origin"]
    before = snapshot(overlays)

    booted = boot(trigger, overlays, python=vpy, cwd=work)
    row["boot rc"] = booted.returncode
    row["boot output = run output"] = booted.stdout == healed.stdout
    assert booted.returncode == 0, str(booted)
    assert "patched" not in booted.stderr, str(booted)
    assert booted.stdout == healed.stdout, str(booted)
    assert snapshot(overlays) == before
