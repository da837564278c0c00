"""Shared pytest hooks and fixtures: the real-crash report table
(tests/test_crashes.py) and the folder of the crash cases' venvs (one per session, so
tests/test_crashes.py and tests/test_crashes_signed.py share the venvs)."""

from __future__ import annotations

import json
import os

import pytest


@pytest.fixture(autouse=True)
def _host_state(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN202
    """Every test gets its own host-state folder (signed-set versions seen, overlays
    withdrawn), in this process's environment and in the children heal_helpers starts:
    overlay bytes are deterministic, so state shared across tests would leak a rollback
    of one test into the next."""
    import heal_helpers

    state = tmp_path_factory.mktemp("host-state")
    monkeypatch.setenv("CODESUTURE_STATE_DIR", str(state))
    heal_helpers.use_state_dir(state)
    yield state


@pytest.fixture(scope="session")
def crash_venv_dir(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """Where the crash cases' venvs are made: one folder for the whole run, shared by
    pytest-xdist workers (their base temp folders sit side by side under one root)."""
    import os

    if os.environ.get("PYTEST_XDIST_WORKER"):
        return tmp_path_factory.getbasetemp().parent / "crash-venvs"
    return tmp_path_factory.mktemp("crash-venvs")


def _table(rows: list[dict]) -> list[str]:
    cols = ["case", "corpus", "python", "healed", "reloaded", "same as fixed", "run ends", "guard"]
    cell = lambda v: "-" if v is None else ("yes" if v is True else "no" if v is False else str(v))  # noqa: E731
    widths = [max(len(c), *(len(cell(r.get(c))) for r in rows)) for c in cols]
    out = [" | ".join(c.ljust(w) for c, w in zip(cols, widths)), "-+-".join("-" * w for w in widths)]
    out += [" | ".join(cell(r.get(c)).ljust(w) for c, w in zip(cols, widths)) for r in rows]
    # Totals per corpus and Python (the closing note's numbers).
    for corpus, py in sorted({(r.get("corpus", ""), r["python"]) for r in rows}):
        mine = [r for r in rows if r.get("corpus", "") == corpus and r["python"] == py]
        out.append(f"{corpus or '?'} corpus on {py}: " + ", ".join(
            f"{c} {sum(r.get(c) is True for r in mine)}/{len(mine)}" for c in ("healed", "reloaded", "same as fixed")))
    return out


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ANN001
    try:
        from heal_helpers import CRASH_REPORT
    except ImportError:
        return
    if not CRASH_REPORT:
        return
    rows = sorted(CRASH_REPORT, key=lambda r: (r.get("corpus", ""), r["case"], r["python"]))
    terminalreporter.section("real crash cases (healed output vs upstream fix)")
    for line in _table(rows):
        terminalreporter.write_line(line)
    path = os.environ.get("CODESUTURE_CRASH_REPORT")
    if path:
        # Appended: CI runs the cases on several Pythons into one report.
        with open(path, "a", encoding="utf-8") as fh:
            fh.write("\n".join(_table(rows)) + "\n")
            for row in rows:
                fh.write(json.dumps(row) + "\n")
            fh.write("\n")
