"""Real crashes in released PyPI packages, healed end to end.

Two corpora (see crash_venvs.py): the shared one (``../shared/crashes``, skipped with a
message when absent) and the project's own (``tests/crashes``, always run). For each
case and the running Python: a throwaway venv with the case's package installed, then,
in a copy of the case folder:

1. ``python trigger.py`` crashes with the case's exception;
2. ``python -m codesuture run --overlays D trigger.py`` writes an overlay for the
   package's own module (stem ``<module>.<cache tag>.<source hash>``) whose metadata
   names its source portably (``site-packages:<path>``), and the run exits 0 -- or,
   where the fixed release raises the library's own error class, ends with that class
   instead of the original crash (healed into the library's error) -- "heals";
3. ``python -m codesuture.boot --overlays D --no-heal trigger.py`` gives the healed
   run's result from that overlay alone (the same exit status, output and final error;
   no new patch, the store unchanged) -- "reloads";
4. the healed run gives what the fixed release gives (``fixed_version_behaviour``: its
   stdout and a clean exit, or the library error class it raises) -- "same as fixed".

Shared cases must heal (with exit 0) and reload; whether they give the fixed release's
result is recorded, not asserted. The project's own cases are held to what CodeSuture
does with them today, recorded per case and Python in ``tests/crashes/expected.json``
with the reason for every case that does not heal or does not give the fixed
release's result (``why``; issue 8 is about healing more of them, and more of them the
way their maintainers did): a case that starts or stops healing, reloading or matching
the fixed release fails with the difference, so that file moves with the code.
``CODESUTURE_CRASH_RECORD=1`` rewrites the outcomes of the cases that run instead of
checking them (review the diff and the ``why`` of the cases that moved).

``CODESUTURE_CRASH_FIXED=1`` also installs each own case's fixed release
(``upstream_fix.fixed_in``) and checks that its trigger still gives the recorded
``fixed_version_behaviour`` (off by default: one more venv per case).

The table (healed / reloaded / same as fixed per case and Python) is printed at the
end of the run (see conftest.py) and written to ``$CODESUTURE_CRASH_REPORT`` when that
is set.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from crash_venvs import (EXPECTED_FILE, HERE_VERSION, OUTCOMES, REPO_CRASHES, SKIP_MSG, CrashCase, VenvError,
                         case_venv, crashes_dir, load_cases, load_expected, record_expected)
from heal_helpers import CRASH_REPORT, TAG, Proc, boot, heal, make_venv, overlays_in, pip_install, plain, snapshot

pytestmark = pytest.mark.crashes

CASES = load_cases()
OWN = [c for c in CASES if c.origin == "repo"]
#: Without ../shared the shared cases are one skipped placeholder (with SKIP_MSG).
PARAMS: list[CrashCase | None] = [*CASES] + ([None] if crashes_dir() is None else [])
RECORD = os.environ.get("CODESUTURE_CRASH_RECORD") == "1"
#: The floor for the project's own corpus (issue 8 asked for 12, issue 12 for 30).
MIN_OWN_CASES = 30


@pytest.fixture(params=PARAMS, ids=[c.id if c else "<no shared folder>" for c in PARAMS])
def case(request: pytest.FixtureRequest) -> CrashCase:
    if request.param is None:
        pytest.skip(SKIP_MSG)
    reason = request.param.skip_reason(needs_heal=False)
    if reason:
        pytest.skip(reason)
    return request.param


def _last_exception(stderr: str) -> str:
    """The ``Type: message`` line a traceback ends with ('' when there is none)."""
    lines = [line for line in stderr.splitlines() if line and not line.startswith((" ", "codesuture:"))]
    return lines[-1] if lines else ""


def _is_class(raised: str, name: str) -> bool:
    """Whether the exception class *raised* (as a traceback prints it) is *name*
    (qualified or not)."""
    return bool(name) and bool(raised) and (raised == name or raised == name.rsplit(".", 1)[-1]
                                            or name.endswith("." + raised))


def same_as_fixed(case: CrashCase, run: Proc) -> bool | None:
    """Whether *run* gives what the fixed release gives: its stdout and exit status,
    or, where the fix raises the library's own error, that error (its class name as
    printed, qualified or not) and the stdout before it. None when unknown."""
    fixed = case.data.get("fixed_version_behaviour") or {}
    if "stdout" not in fixed:
        return None
    if not fixed.get("raised"):
        return run.returncode == 0 and run.stdout == fixed["stdout"]
    raised = _last_exception(run.stderr).split(":", 1)[0]
    return (run.returncode != 0 and run.stdout == fixed["stdout"]
            and _is_class(raised, fixed.get("exception", {}).get("type", "")))


def into_library_error(case: CrashCase, crashed: Proc, run: Proc) -> bool:
    """Whether *run* ends with the library error class the fixed release raises (and
    no longer with the original crash): the heal a library whose fix raises its own
    clean error should get."""
    fixed = case.data.get("fixed_version_behaviour") or {}
    final = _last_exception(run.stderr)
    return (run.returncode != 0 and bool(fixed.get("raised")) and final != _last_exception(crashed.stderr)
            and _is_class(final.split(":", 1)[0], fixed.get("exception", {}).get("type", "")))


def test_real_crash(case: CrashCase, crash_venv_dir: Path, tmp_path: Path) -> None:
    row: dict = {"case": case.id, "corpus": case.origin, "python": HERE_VERSION, "healed": None, "reloaded": None,
                 "same as fixed": None, "guard": "", "run ends": "", "plain rc": None, "run rc": None,
                 "boot rc": None}
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
    patched = [line for line in healed.stderr.splitlines() if line.startswith("codesuture: WARNING patched ")]
    row["guard"] = ", ".join(m.group(1) for line in patched if (m := re.search(r": (\w+)(?:/\w+)? on `", line)))
    final = _last_exception(healed.stderr) if healed.returncode else ""
    row["run ends"] = "exit 0" if not healed.returncode else (final.split(":", 1)[0] or f"exit {healed.returncode}")
    row["same as fixed"] = same_as_fixed(case, healed)
    row["run stdout"] = healed.stdout
    row["run exception"] = final
    names = [n for n in overlays_in(overlays) if n.startswith(f"{case.module}.{TAG}.")]
    origin = json.loads((overlays / names[0]).with_suffix(".json").read_text())["origin"] if names else None
    into_error = into_library_error(case, crashed, healed)

    # --replay auto: a run with a side effect before its crash is healed for the next run
    not_replayed = healed.returncode != 0 and "; not replayed: " in healed.stderr
    outcome = {"heals": (healed.returncode == 0 or into_error or not_replayed) and bool(patched) and bool(names)
               and origin == "site-packages:" + case.data["innermost_frame"]["file"],
               "reloads": False, "same_as_fixed": bool(row["same as fixed"])}
    booted = None
    if outcome["heals"]:
        before = snapshot(overlays)
        booted = boot(trigger, overlays, python=vpy, cwd=work)
        row["boot rc"] = booted.returncode
        if not_replayed:  # the next run, from the overlay alone, completes
            outcome["reloads"] = (booted.returncode == 0 and "patched" not in booted.stderr
                                  and snapshot(overlays) == before)
        else:
            outcome["reloads"] = (booted.returncode == healed.returncode and "patched" not in booted.stderr
                                  and booted.stdout == healed.stdout and snapshot(overlays) == before
                                  and (not healed.returncode or _last_exception(booted.stderr) == final))
    row["healed"] = outcome["heals"]
    row["reloaded"] = outcome["reloads"] if outcome["heals"] else None
    row["outcome"] = outcome

    if case.origin == "shared":
        _check_shared(case, vpy, work, trigger, overlays, healed, patched, names, origin, booted)
        return
    if RECORD:
        record_expected(case.id, HERE_VERSION, outcome)
        return
    expected = case.expected()
    assert expected is not None, (f"{case.id}: no expectations for Python {HERE_VERSION} in {EXPECTED_FILE}; "
                                  "run the case with CODESUTURE_CRASH_RECORD=1 and review the entry")
    row["expected"] = expected
    changed = [f"{k}: {'yes' if outcome[k] else 'no'} today, {'yes' if expected[k] else 'no'} expected"
               for k in OUTCOMES if outcome[k] != expected[k]]
    why = load_expected().get(case.id, {}).get("why", "")
    assert not changed, (
        f"{case.id} on Python {HERE_VERSION} changed ({'; '.join(changed)}). If this is progress, update "
        f"{EXPECTED_FILE.relative_to(EXPECTED_FILE.parents[2])} (CODESUTURE_CRASH_RECORD=1 rewrites the outcomes; "
        f"revise its 'why'); if not, it is a regression.\nrecorded why: {why or '-'}\n"
        f"overlays: {overlays_in(overlays)} origin: {origin}\n{healed}" + (f"\n{booted}" if booted else ""))


def xfail_if_refused(healed: Proc) -> None:
    """An expected failure when the value-flow model refused the site (a default would
    decide a branch whose sides leave the function separately: fail closed, issue 12),
    naming its reason."""
    if "decides control flow" in healed.stderr:
        reason = next(ln for ln in healed.stderr.splitlines() if "decides control flow" in ln)
        pytest.xfail(f"refused by the value-flow rule (fail closed): {reason[-300:]}")


def _check_shared(case: CrashCase, vpy: str, work: Path, trigger: Path, overlays: Path, healed: Proc,
                  patched: list[str], names: list[str], origin: str | None, booted: Proc | None) -> None:
    """The shared cases must heal and reload (their result is recorded, not asserted):
    replayed to exit 0 in the same run, or, when the run had a side effect before its
    crash (``--replay auto``), healed for the next run, which must then exit 0 from
    the overlay alone. A site the value-flow model refuses (a default would decide a
    branch whose sides leave the function separately: fail closed, issue 12) is an
    expected failure that names its reason."""
    if not patched:
        xfail_if_refused(healed)
    not_replayed = healed.returncode != 0 and "; not replayed: " in healed.stderr
    assert healed.returncode == 0 or not_replayed, str(healed)
    assert patched, str(healed)
    assert names, (overlays_in(overlays), str(healed))
    assert origin == "site-packages:" + case.data["innermost_frame"]["file"], origin
    assert booted is not None
    assert booted.returncode == 0, str(booted)
    assert "patched" not in booted.stderr, str(booted)
    if not not_replayed:
        assert booted.stdout == healed.stdout, str(booted)


# --- the project's own corpus: its shape, its expectations, its fixed releases ---------

#: Keys every case.json has (the shared cases' shape).
CASE_KEYS = {"id", "package", "version", "pip_spec", "category", "source", "public_api", "trigger",
             "python_versions_verified", "exception", "innermost_frame", "upstream_fix", "correct_output_known",
             "fixed_version_behaviour"}


def test_own_corpus_shape() -> None:
    """At least MIN_OWN_CASES cases, each in the shared cases' case.json shape with the
    fixed release's behaviour recorded, verified on 3.11 and 3.12, and an expectation
    (with the reason when it does not heal or differs from the fixed release) for
    each Python it was verified on."""
    assert len(OWN) >= MIN_OWN_CASES, f"{len(OWN)} cases in {REPO_CRASHES}, issue 12 asks for {MIN_OWN_CASES}"
    expected = load_expected()
    problems = []
    for c in OWN:
        d = c.data
        missing = CASE_KEYS - set(d)
        if missing:
            problems.append(f"{c.id}: case.json lacks {sorted(missing)}")
            continue
        if d["id"] != c.path.name or not c.trigger.is_file():
            problems.append(f"{c.id}: id differs from its folder or trigger missing")
        if d["pip_spec"] != f"{d['package']}=={d['version']}":
            problems.append(f"{c.id}: pip_spec {d['pip_spec']!r} is not package==version")
        if not {"3.11", "3.12"} <= set(c.versions):
            problems.append(f"{c.id}: verified on {c.versions}, not on 3.11 and 3.12")
        fix, fixed = d["upstream_fix"], d["fixed_version_behaviour"]
        if not (fix.get("fixed_in", "").startswith(d["package"] + "==") and fix.get("reference") and fix.get("summary")):
            problems.append(f"{c.id}: upstream_fix needs fixed_in (package==version), reference and summary")
        if "stdout" not in fixed or "raised" not in fixed or (fixed["raised"] and not fixed.get("exception", {}).get("type")):
            problems.append(f"{c.id}: fixed_version_behaviour needs stdout, raised (and the exception it raises)")
        if not {"type", "message"} <= set(d["exception"]) or not {"file", "function", "line"} <= set(d["innermost_frame"]):
            problems.append(f"{c.id}: exception/innermost_frame incomplete")
        entry = expected.get(c.id, {})
        for v in c.versions:
            if set(entry.get(v, {})) != set(OUTCOMES):
                problems.append(f"{c.id}: no outcomes for {v} in {EXPECTED_FILE.name}")
            elif not (entry[v]["heals"] and entry[v]["same_as_fixed"]) and not entry.get("why"):
                problems.append(f"{c.id}: {v} does not heal or differs from the fixed release, but has no 'why'")
    stale = sorted(set(expected) - {c.id for c in OWN})
    if stale:
        problems.append(f"{EXPECTED_FILE.name} has entries for no case: {stale}")
    assert not problems, "\n".join(problems)


FIXED = os.environ.get("CODESUTURE_CRASH_FIXED") == "1"


@pytest.mark.skipif(not FIXED, reason="the fixed releases are checked with CODESUTURE_CRASH_FIXED=1 (one venv per case)")
def test_fixed_release_behaviour(crash_venv_dir: Path, tmp_path: Path) -> None:
    """Each own case's fixed release (``upstream_fix.fixed_in``, with the case's extra
    requirements) still gives the recorded ``fixed_version_behaviour`` on this Python."""
    problems, checked = [], 0
    for own in OWN:
        if own.skip_reason(needs_heal=False):
            continue
        vpy = make_venv(crash_venv_dir / f"{own.id}-fixed-{HERE_VERSION}")
        p = pip_install(vpy, own.data["upstream_fix"]["fixed_in"], *own.extra_requirements())
        if p.returncode != 0:
            problems.append(f"{own.id}: {p}")
            continue
        work = tmp_path / own.id
        shutil.copytree(own.path, work)
        ran = plain(work / own.trigger.name, python=str(vpy), cwd=work)
        fixed = own.data["fixed_version_behaviour"]
        if fixed["raised"]:
            exc = fixed["exception"]
            ok = ran.returncode != 0 and _last_exception(ran.stderr) == f"{exc['type']}: {exc['message']}"
        else:
            ok = ran.returncode == 0
        if not ok or ran.stdout != fixed["stdout"]:
            problems.append(f"{own.id} ({own.data['upstream_fix']['fixed_in']}) no longer gives what case.json "
                            f"records:\n{ran}")
        checked += 1
    assert checked, "no own case runs on this Python"
    assert not problems, "\n\n".join(problems)
