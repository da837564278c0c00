"""Shared pytest hooks: the real-crash report table (tests/test_crashes.py)."""

from __future__ import annotations

import json
import os


def _table(rows: list[dict]) -> list[str]:
    cols = ["case", "python", "plain rc", "run rc", "boot rc", "guard", "equals upstream", "boot output = run output"]
    cell = lambda v: "-" if v is None else ("yes" if v is True else "no" if v is False else str(v))  # noqa: E731
    widths = [max(len(c), *(len(cell(r.get(c))) for r in rows)) for c in cols]
    out = [" | ".join(c.ljust(w) for c, w in zip(cols, widths)), "-+-".join("-" * w for w in widths)]
    out += [" | ".join(cell(r.get(c)).ljust(w) for c, w in zip(cols, widths)) for r in rows]
    return out


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ANN001
    try:
        from heal_helpers import CRASH_REPORT
    except ImportError:
        return
    if not CRASH_REPORT:
        return
    rows = sorted(CRASH_REPORT, key=lambda r: (r["case"], r["python"]))
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
