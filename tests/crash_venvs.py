"""The real crash cases and their throwaway venvs.

Two folders of cases, each case a folder with ``case.json`` and ``trigger.py``:

- ``../shared/crashes`` (or ``$CODESUTURE_SHARED/crashes``): the shared corpus; its
  cases skip with :data:`SKIP_MSG` when the folder is absent;
- ``tests/crashes``: the project's own corpus (issue 8), always present. Its
  ``expected.json`` records, per case and Python, what CodeSuture does with each crash
  today (heals / reloads from the overlay alone / gives the fixed release's result);
  tests/test_crashes.py holds the code to those expectations.

A case venv is :func:`heal_helpers.make_venv` (``python -m venv --without-pip`` plus a
``.pth`` that adds the running interpreter's ``site-packages``, so ``codesuture`` and
its dependencies import without being reinstalled) with the case's ``pip_spec`` and
extra requirements installed by :func:`heal_helpers.pip_install` (the running
interpreter's pip, ``pip --python``). The venv, the environment and ../shared come
from heal_helpers: one place for them.

Extra requirements come from ``case.json`` (``"extra_requirements"``: a list for every
Python, or a mapping ``{"*": [...], "3.12": [...]}``) and from
:data:`EXTRA_REQUIREMENTS` for shared cases whose ``case.json`` only notes them.

:func:`case_venv` creates each venv once per process, keyed by the requirements and
the interpreter (cases with the same requirements share one), so
tests/test_crashes.py and tests/test_crashes_signed.py share them in one run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from heal_helpers import PY, REPO, make_venv, pip_install, shared_dir

HERE_VERSION = "%d.%d" % sys.version_info[:2]
#: Why the shared real crash tests skip when the cases are absent.
SKIP_MSG = ("real crash cases not found: ../shared/crashes beside the checkout (or $CODESUTURE_SHARED/crashes) "
            "is absent; CI has it")
#: The project's own cases (issue 8).
REPO_CRASHES = REPO / "tests" / "crashes"
#: What CodeSuture does with each of the project's own cases today, per Python.
EXPECTED_FILE = REPO_CRASHES / "expected.json"
#: The three outcomes expected.json records for a case on one Python.
OUTCOMES = ("heals", "reloads", "same_as_fixed")

#: Extra requirements some shared cases need on some Pythons (from their case.json notes).
EXTRA_REQUIREMENTS: dict[tuple[str, str], list[str]] = {
    # httpie 0.9.3 imports pkg_resources; 3.12+ venvs ship without setuptools.
    ("httpie-session-none-header", "3.12"): ["setuptools<70"],
    ("httpie-session-none-header", "3.13"): ["setuptools<70"],
}


def crashes_dir() -> Path | None:
    """``<shared>/crashes`` when present."""
    shared = shared_dir()
    if shared is None or not (shared / "crashes").is_dir():
        return None
    return shared / "crashes"


@dataclass(frozen=True)
class CrashCase:
    id: str
    path: Path
    pip_spec: str
    versions: tuple[str, ...]  # X.Y the case was verified on
    data: dict
    origin: str = "shared"  # "shared" (../shared/crashes) or "repo" (tests/crashes)

    @property
    def trigger(self) -> Path:
        return self.path / self.data.get("trigger", "trigger.py")

    @property
    def exception(self) -> str:
        return self.data["exception"]["type"]

    @property
    def module(self) -> str:
        """The import name of the module the crash is in: ``httpie/sessions.py`` ->
        ``httpie.sessions``, ``pkg/__init__.py`` -> ``pkg``."""
        file = self.data["innermost_frame"]["file"]
        parts = file[:-3].split("/") if file.endswith(".py") else file.split("/")
        if parts[-1] == "__init__":
            parts = parts[:-1]
        return ".".join(parts)

    def extra_requirements(self, version: str = HERE_VERSION) -> list[str]:
        extra = self.data.get("extra_requirements") or []
        if isinstance(extra, dict):
            extra = [*extra.get("*", []), *extra.get(version, [])]
        return [*extra, *EXTRA_REQUIREMENTS.get((self.id, version), [])]

    def requirements(self, version: str = HERE_VERSION) -> tuple[str, ...]:
        return (self.pip_spec, *self.extra_requirements(version))

    def expected(self, version: str = HERE_VERSION) -> dict[str, bool] | None:
        """What CodeSuture does with this crash today on *version* (tests/crashes/
        expected.json): ``{"heals", "reloads", "same_as_fixed"}``; None for shared cases
        and for cases not recorded there."""
        if self.origin != "repo":
            return None
        return load_expected().get(self.id, {}).get(version)

    def skip_reason(self, version: str = HERE_VERSION, needs_heal: bool = True) -> str | None:
        """Why this case does not run on *version*, or None. With *needs_heal* (tests
        that start from a healed overlay, like tests/test_crashes_signed.py), a case of
        the project's corpus that CodeSuture does not heal today on *version* is skipped
        too, and so is one it heals into the library's own error (its fixed release
        raises one, so the healed run exits 1, not 0); tests/test_crashes.py holds them
        to their expectations instead."""
        if version not in self.versions:
            note = self.data.get(f"python_{version.replace('.', '_')}", "")
            return (f"{self.id} is verified on Python {', '.join(self.versions) or 'none'} only, not {version}"
                    + (f": {note}" if note else ""))
        if needs_heal and self.origin == "repo":
            expected = self.expected(version)
            if expected is None:
                return f"{self.id} has no expectations for Python {version} in {EXPECTED_FILE.name}"
            if not expected["heals"]:
                return (f"{self.id} is not healed today on Python {version} ({EXPECTED_FILE.name}); "
                        "tests/test_crashes.py checks that")
            if self.fix_raises:
                return (f"{self.id} heals into the library's own error, as its fixed release raises one (exit 1, "
                        "not 0); tests/test_crashes.py checks that")
        return None

    @property
    def fix_raises(self) -> bool:
        """Whether the fixed release raises the library's own error for the trigger
        (so the best heal ends with that error rather than exiting 0)."""
        return bool((self.data.get("fixed_version_behaviour") or {}).get("raised"))


def _load_dir(root: Path, origin: str) -> list[CrashCase]:
    out = []
    for d in sorted(p for p in root.iterdir() if (p / "case.json").is_file()):
        data = json.loads((d / "case.json").read_text())
        versions = tuple(sorted({".".join(v.split(".")[:2]) for v in data.get("python_versions_verified", [])}))
        out.append(CrashCase(data.get("id", d.name), d, data["pip_spec"], versions, data, origin))
    return out


def load_cases(shared: bool = True, repo: bool = True) -> list[CrashCase]:
    """The cases of ``<shared>/crashes`` (none when it is absent) followed by the
    project's own (tests/crashes)."""
    out: list[CrashCase] = []
    root = crashes_dir()
    if shared and root is not None:
        out += _load_dir(root, "shared")
    if repo and REPO_CRASHES.is_dir():
        out += _load_dir(REPO_CRASHES, "repo")
    return out


def load_expected() -> dict[str, dict]:
    """tests/crashes/expected.json without its ``_comment``: case id -> X.Y -> outcomes,
    and ``why``: the reason a case does not heal or differs from its fixed release."""
    if not EXPECTED_FILE.is_file():
        return {}
    data = json.loads(EXPECTED_FILE.read_text())
    return {k: v for k, v in data.items() if not k.startswith("_")}


def record_expected(case_id: str, version: str, outcomes: dict[str, bool]) -> None:
    """Write *outcomes* for *case_id* on *version* into expected.json (record mode,
    ``CODESUTURE_CRASH_RECORD=1``), keeping everything else in the file."""
    data = json.loads(EXPECTED_FILE.read_text()) if EXPECTED_FILE.is_file() else {}
    data.setdefault(case_id, {})[version] = {k: bool(outcomes[k]) for k in OUTCOMES}
    # One line per case, so a change of expectations reads as a one-line diff.
    lines = [f" {json.dumps(k)}: {json.dumps(v)}" for k, v in data.items() if k.startswith("_")]
    lines += [f" {json.dumps(k)}: {json.dumps({v: data[k][v] for v in sorted(data[k])})}"
              for k in sorted(data) if not k.startswith("_")]
    EXPECTED_FILE.write_text("{\n" + ",\n".join(lines) + "\n}\n")


class VenvError(RuntimeError):
    pass


_MADE: dict[tuple[tuple[str, ...], str], Path | VenvError] = {}


def case_venv(case: CrashCase, base_dir: Path, python: str = PY) -> Path:
    """The venv python for *case* on *python* (made once per set of requirements under
    *base_dir*, which pytest-xdist workers share: a lock file serialises the making, a
    ``.ready`` file marks a finished venv, ``.failed`` holds pip's error). Raises
    :class:`VenvError` (remembered) when pip fails."""
    import fcntl

    key = (case.requirements(), python)
    made = _MADE.get(key)
    if made is None:
        where = base_dir / f"{case.id}-{HERE_VERSION}"
        base_dir.mkdir(parents=True, exist_ok=True)
        with open(base_dir / f".{case.id}-{HERE_VERSION}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            ready, failed = where / ".ready", where / ".failed"
            if ready.is_file():
                made = Path(ready.read_text())
            elif failed.is_file():
                made = VenvError(failed.read_text())
            else:
                try:
                    vpy = make_venv(where, python)
                    p = pip_install(vpy, *case.requirements())
                    if p.returncode != 0:
                        raise VenvError(f"pip install {' '.join(case.requirements())} failed:\n{p}")
                    made = vpy
                    ready.write_text(str(vpy))
                except (subprocess.SubprocessError, OSError, VenvError) as exc:
                    made = exc if isinstance(exc, VenvError) else VenvError(f"venv for {case.id}: {exc}")
                    where.mkdir(parents=True, exist_ok=True)
                    failed.write_text(str(made))
        _MADE[key] = made
    if isinstance(made, VenvError):
        raise made
    return made
