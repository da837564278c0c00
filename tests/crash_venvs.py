"""The real crash cases of ../shared/crashes and their throwaway venvs.

A case venv is :func:`heal_helpers.make_venv` (``python -m venv --without-pip`` plus a
``.pth`` that adds the running interpreter's ``site-packages``, so ``codesuture`` and
its dependencies import without being reinstalled) with the case's ``pip_spec``
installed by :func:`heal_helpers.pip_install` (the running interpreter's pip,
``pip --python``). The venv, the environment and ../shared come from heal_helpers:
one place for them.

:func:`case_venv` creates each (case, Python) venv once per process, so
tests/test_crashes.py and tests/test_crashes_signed.py share them in one run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from heal_helpers import PY, make_venv, pip_install, shared_dir

HERE_VERSION = "%d.%d" % sys.version_info[:2]
#: Why the real crash tests skip when the cases are absent.
SKIP_MSG = ("real crash cases not found: ../shared/crashes beside the checkout (or $CODESUTURE_SHARED/crashes) "
            "is absent; CI has it")

#: Extra requirements some cases need on some Pythons (from their case.json notes).
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
        return EXTRA_REQUIREMENTS.get((self.id, version), [])

    def skip_reason(self, version: str = HERE_VERSION) -> str | None:
        """Why this case does not run on *version*, or None."""
        if version not in self.versions:
            note = self.data.get(f"python_{version.replace('.', '_')}", "")
            return (f"{self.id} is verified on Python {', '.join(self.versions) or 'none'} only, not {version}"
                    + (f": {note}" if note else ""))
        return None


def load_cases() -> list[CrashCase]:
    """Every case of ``<shared>/crashes`` (``[]`` when it is absent)."""
    root = crashes_dir()
    if root is None:
        return []
    out = []
    for d in sorted(p for p in root.iterdir() if (p / "case.json").is_file()):
        data = json.loads((d / "case.json").read_text())
        versions = tuple(sorted({".".join(v.split(".")[:2]) for v in data.get("python_versions_verified", [])}))
        out.append(CrashCase(data.get("id", d.name), d, data["pip_spec"], versions, data))
    return out


class VenvError(RuntimeError):
    pass


_MADE: dict[tuple[str, str], Path | VenvError] = {}


def case_venv(case: CrashCase, base_dir: Path, python: str = PY) -> Path:
    """The venv python for *case* on *python* (made once per process, under
    *base_dir*). Raises :class:`VenvError` (remembered) when pip fails."""
    key = (case.id, python)
    made = _MADE.get(key)
    if made is None:
        where = base_dir / f"{case.id}-{HERE_VERSION}"
        try:
            vpy = make_venv(where, python)
            p = pip_install(vpy, case.pip_spec, *case.extra_requirements())
            if p.returncode != 0:
                raise VenvError(f"pip install {case.pip_spec} failed:\n{p}")
            made = vpy
        except (subprocess.SubprocessError, OSError) as exc:
            made = VenvError(f"venv for {case.id}: {exc}")
        _MADE[key] = made
    if isinstance(made, VenvError):
        raise made
    return made
