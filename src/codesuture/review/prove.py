"""``codesuture prove STORE --tests CMD``: the app's own tests with and without the overlays.

The test command (``pytest -q``, ``python -m pytest tests/``, ...) runs twice: plain
(``PY -m pytest ARGS``, CodeSuture's settings removed from the environment) and under
boot with the store (``PY -m codesuture.boot --overlays STORE --no-heal
--require-overlays -m pytest ARGS``). A command that is not pytest (``make test``,
``tox``) runs as it is, the booted run with ``CODESUTURE_AUTOSTART=1`` and the store in
the environment, so every Python process it starts loads the overlays through the
start-up hook (:mod:`codesuture.autostart`). Both runs' passed/failed counts come from
pytest's summary line; per-test outcomes from ``--junitxml`` (added for pytest
commands). A test that passes without the overlays and fails (or no longer runs) with
them is a **regression**: the patch set is flagged (``prove`` exits 1) and the
regressions are listed in the evidence.

The outcome is recorded on every patch of every overlay of the store for this
interpreter as ``evidence["tests"]`` (with the overlay's SHA-256 it was made with), so
``codesuture sign`` puts it into the signed Statement, and ``sign --require-evidence``
refuses an overlay whose recorded test run found regressions.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from codesuture.errors import CodeSutureError

#: The counts pytest's summary line gives (``3 passed, 1 failed, 2 errors in 0.12s``).
_COUNT = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed|deselected)\b")
_MAX_LISTED = 50


@dataclass
class Run:
    """One run of the test command: exit code, counts from the summary line, per-test
    outcomes (test id -> passed/failed/error/skipped) when known, and output tail."""

    exit: int
    counts: dict[str, int]
    tests: dict[str, str]
    tail: str

    def to_json(self) -> dict[str, Any]:
        return {"exit": self.exit, **{k: self.counts.get(k, 0) for k in ("passed", "failed", "errors", "skipped")}}


@dataclass
class TestsResult:
    """Both runs, the regressions (passing without, failing or absent with) and the
    tests the overlays fixed (failing without, passing with)."""

    command: str
    without: Run
    with_: Run
    regressions: list[str]
    fixed: list[str]
    interpreter: dict[str, str]
    recorded: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.regressions

    def evidence(self, overlay_sha256: str) -> dict[str, Any]:
        return {
            "command": self.command, "without": self.without.to_json(), "with": self.with_.to_json(),
            "regressions": self.regressions[:_MAX_LISTED], "regressed": len(self.regressions),
            "fixed": self.fixed[:_MAX_LISTED], "interpreter": self.interpreter, "overlay_sha256": overlay_sha256,
            "at": _now(),
        }


def _now() -> str:
    from codesuture.util.clock import iso_utc

    return iso_utc(time.time())


def summary_counts(output: str) -> dict[str, int]:
    """Counts from pytest's last summary line (``== 3 passed, 1 failed in 0.1s ==`` or
    the ``-q`` form); ``{}`` when there is none."""
    for line in reversed(output.splitlines()):
        if " in " in line and _COUNT.search(line):
            counts: dict[str, int] = {}
            for n, what in _COUNT.findall(line):
                key = "errors" if what.startswith("error") else what
                counts[key] = counts.get(key, 0) + int(n)
            return counts
        if "no tests ran" in line:
            return {}
    return {}


def junit_outcomes(path: str) -> dict[str, str]:
    """Test id (``classname::name``) -> ``passed``/``failed``/``error``/``skipped`` from a
    JUnit XML file pytest wrote; ``{}`` when it is missing or unreadable."""
    import xml.etree.ElementTree as ET

    try:
        tree = ET.parse(path)
    except (OSError, ET.ParseError):
        return {}
    out: dict[str, str] = {}
    for case in tree.iter("testcase"):
        key = f"{case.get('classname', '')}::{case.get('name', '')}"
        tags = {child.tag for child in case}
        outcome = ("failed" if "failure" in tags else "error" if "error" in tags else
                   "skipped" if "skipped" in tags else "passed")
        # a test that passed and then errored in teardown is reported twice: the worse wins
        if out.get(key) in ("failed", "error"):
            continue
        out[key] = outcome
    return out


def split_command(command: str) -> tuple[list[str] | None, list[str]]:
    """``(pytest arguments, argv)`` of *command*; the pytest arguments are None when it
    does not run pytest (``pytest ...``, ``py.test ...``, ``python -m pytest ...``)."""
    argv = shlex.split(command)
    if not argv:
        raise CodeSutureError("--tests: the command is empty")
    head = os.path.basename(argv[0])
    if head in ("pytest", "py.test"):
        return argv[1:], argv
    if head.startswith("python") and argv[1:3] == ["-m", "pytest"]:
        return argv[3:], argv
    return None, argv


def _run(argv: list[str], cwd: str, env: dict[str, str], timeout: float, junit: str | None) -> Run:
    import subprocess

    try:
        p = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
        rc, out = p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired:
        rc, out = -1, f"timed out after {timeout:g} s"
    except OSError as exc:
        raise CodeSutureError(f"--tests: cannot run {argv[0]}: {exc.strerror or exc}") from None
    return Run(rc, summary_counts(out), junit_outcomes(junit) if junit else {}, out[-3000:])


def run_tests(store: str, command: str, *, python: str | None = None, keys: str | None = None,
              cwd: str | None = None, timeout: float = 1800) -> TestsResult:
    """Run *command* in *cwd* without and with the overlays of the folder *store*;
    compare per-test outcomes. Raises :class:`CodeSutureError` when it cannot run."""
    import tempfile

    from codesuture.review.repro import _interpreter, boot_command, child_env

    py = python or sys.executable
    where = os.path.abspath(cwd or os.getcwd())
    pytest_args, argv = split_command(command)
    with tempfile.TemporaryDirectory(prefix="codesuture-prove-tests-") as tmp:
        if pytest_args is not None:
            junit = {m: os.path.join(tmp, f"{m}.xml") for m in ("without", "with")}
            without = _run([py, "-m", "pytest", *pytest_args, f"--junitxml={junit['without']}"], where, child_env(),
                           timeout, junit["without"])
            with_ = _run([*boot_command(py, store, keys), "-m", "pytest", *pytest_args, f"--junitxml={junit['with']}"],
                         where, child_env(), timeout, junit["with"])
        else:
            without = _run(argv, where, child_env(), timeout, None)
            env = child_env(CODESUTURE_AUTOSTART="1", CODESUTURE_OVERLAYS=os.path.abspath(store), CODESUTURE_HEAL="0",
                            CODESUTURE_REQUIRE_OVERLAYS="1", **({"CODESUTURE_KEYS": os.path.abspath(keys)} if keys else {}))
            with_ = _run(argv, where, env, timeout, None)
    regressions: list[str] = []
    fixed: list[str] = []
    if without.tests or with_.tests:
        for test, before in sorted(without.tests.items()):
            after = with_.tests.get(test, "absent")
            if before == "passed" and after not in ("passed", "skipped"):
                regressions.append(f"{test} ({after} with the overlays)")
            elif before in ("failed", "error") and after == "passed":
                fixed.append(test)
    else:  # no per-test outcomes (not pytest): the counts, else the exit status
        bad_without, bad_with = (r.counts.get("failed", 0) + r.counts.get("errors", 0) for r in (without, with_))
        if (without.counts or with_.counts) and (with_.counts.get("passed", 0) < without.counts.get("passed", 0)
                                                 or bad_with > bad_without):
            regressions.append(f"{without.counts.get('passed', 0)} passed without the overlays, "
                               f"{with_.counts.get('passed', 0)} with them")
        elif without.exit == 0 and with_.exit != 0:
            regressions.append(f"the command passes without the overlays and exits {with_.exit} with them")
    return TestsResult(command, without, with_, regressions, fixed, _interpreter(py))


def record(store: str, result: TestsResult) -> list[str]:
    """Write ``evidence["tests"]`` on every patch of every overlay of *store* built for
    the interpreter that ran the tests; returns the sidecars written."""
    from codesuture.overlay.names import MAX_OVERLAY_BYTES, OVERLAY_SUFFIX
    from codesuture.review.repro import record_evidence
    from codesuture.store.directory import DirectoryStore

    written = []
    for entry in DirectoryStore(store, budget=None).entries():
        if entry.cache_tag != result.interpreter.get("cache_tag"):
            continue
        data = entry.read(OVERLAY_SUFFIX, MAX_OVERLAY_BYTES) or b""
        written.append(record_evidence(store, entry.name, None, "tests", result.evidence(hashlib.sha256(data).hexdigest())))
    result.recorded = written
    return written


__all__ = ["run_tests", "record", "summary_counts", "junit_outcomes", "split_command", "Run", "TestsResult"]
