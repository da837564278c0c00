"""Real crashes in released PyPI packages (``../shared/crashes``), healed end to end.

For each case and the running Python: a throwaway venv (``python -m venv``) that sees
this interpreter's packages (codesuture and its dependencies) through a ``.pth``,
``pip install <pip_spec>`` into it, then, in a copy of the case folder:

1. ``python trigger.py`` crashes with the case's exception;
2. ``python -m codesuture run --overlays D trigger.py`` exits 0 and writes an overlay
   for the package's own module (stem ``<module>.<cache tag>.<source hash>``);
3. ``python -m codesuture.boot --overlays D --no-heal trigger.py`` exits 0 from that
   overlay alone (no new patch).

Whether the healed output equals the upstream fix's output (``fixed_version_behaviour``)
is recorded, not asserted: guards return documented defaults, which can differ from
what upstream chose. The table is printed at the end of the run (see conftest.py) and
written to ``$CODESUTURE_CRASH_REPORT`` when that is set.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from heal_helpers import CRASH_REPORT, TAG, boot, heal, make_venv, overlays_in, pip_install, plain, snapshot

pytestmark = pytest.mark.crashes

SHARED = Path(os.environ.get("CODESUTURE_SHARED") or Path(__file__).resolve().parents[1].parent / "shared")
CRASHES = SHARED / "crashes"
SKIP_MSG = "../shared/crashes not present: real crash cases need the shared folder (CI has it)"
PY_MM = f"{sys.version_info.major}.{sys.version_info.minor}"


def _case_ids() -> list[str]:
    if not CRASHES.is_dir():
        return ["<no shared folder>"]
    return sorted(p.name for p in CRASHES.iterdir() if (p / "case.json").is_file())


def _module_of(file: str) -> str:
    """``httpie/sessions.py`` -> ``httpie.sessions``; ``pkg/__init__.py`` -> ``pkg``."""
    parts = file[:-3].split("/") if file.endswith(".py") else file.split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _extra_requirements(case: dict) -> list[str]:
    """Requirements the case notes say this Python needs (httpie 0.9.3 imports
    pkg_resources; 3.12+ venvs have no setuptools: ``setuptools<70``)."""
    if sys.version_info < (3, 12):
        return []
    return re.findall(r"setuptools<\d+", case.get("python_3_12", ""))


def _reproducible(case: dict) -> bool:
    verified = {".".join(v.split(".")[:2]) for v in case.get("python_versions_verified", [])}
    return PY_MM in verified


@pytest.fixture(scope="session")
def venvs_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("crash_venvs")


@pytest.mark.parametrize("case_id", _case_ids())
def test_real_crash(case_id: str, venvs_root: Path, tmp_path: Path) -> None:
    if not CRASHES.is_dir():
        pytest.skip(SKIP_MSG)
    folder = CRASHES / case_id
    case = json.loads((folder / "case.json").read_text())
    if not _reproducible(case):
        verified = ", ".join(case.get("python_versions_verified", [])) or "none"
        note = case.get("python_3_12", "") if PY_MM == "3.12" else ""
        pytest.skip(f"{case_id} is not reproducible on Python {PY_MM} (verified on {verified}){': ' + note if note else ''}")

    row = {"case": case_id, "python": PY_MM, "plain rc": None, "run rc": None, "boot rc": None,
           "guard": "", "equals upstream": None, "boot output = run output": None}
    CRASH_REPORT.append(row)

    vpy = make_venv(venvs_root / case_id)
    reqs = [case["pip_spec"], *_extra_requirements(case)]
    installed = pip_install(vpy, *reqs)
    assert installed.returncode == 0, str(installed)

    work = tmp_path / case_id
    shutil.copytree(folder, work)
    trigger = work / case.get("trigger", "trigger.py")
    overlays = tmp_path / "overlays"
    exc_type = case["exception"]["type"]

    crashed = plain(trigger, python=str(vpy), cwd=work)
    row["plain rc"] = crashed.returncode
    assert crashed.returncode != 0, str(crashed)
    assert re.search(rf"^{exc_type}\b", crashed.stderr, re.M), str(crashed)

    healed = heal(trigger, overlays, python=str(vpy), cwd=work)
    row["run rc"] = healed.returncode
    patched = [line for line in healed.stderr.splitlines() if line.startswith("codesuture: patched ")]
    row["guard"] = ", ".join(m.group(1) for line in patched if (m := re.search(r": (\w+)(?:/\w+)? on `", line)))
    expected = case.get("fixed_version_behaviour", {}).get("stdout")
    row["equals upstream"] = healed.stdout == expected if expected is not None else None
    row["run stdout"] = healed.stdout
    assert healed.returncode == 0, str(healed)
    assert patched, str(healed)
    module = _module_of(case["innermost_frame"]["file"])
    names = overlays_in(overlays)
    assert any(n.startswith(f"{module}.{TAG}.") for n in names), (names, str(healed))
    before = snapshot(overlays)

    booted = boot(trigger, overlays, python=str(vpy), cwd=work)
    row["boot rc"] = booted.returncode
    row["boot output = run output"] = booted.stdout == healed.stdout
    assert booted.returncode == 0, str(booted)
    assert "patched" not in booted.stderr, str(booted)
    assert booted.stdout == healed.stdout, str(booted)
    assert snapshot(overlays) == before
