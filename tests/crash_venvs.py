"""Throwaway venvs for the real crash cases in ../shared/crashes (shared helper).

A case venv is ``python -m venv --without-pip`` made from the running interpreter,
plus a ``.pth`` file that adds the running interpreter's ``site-packages`` (so
``codesuture`` and its dependencies import without being reinstalled), plus the case's
``pip_spec`` installed with the running interpreter's pip (``pip --python``).

:func:`case_venv` creates each (case, Python) venv once per process; the session
fixture in a test module keeps them for the whole run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

PY = sys.executable
HERE_VERSION = "%d.%d" % sys.version_info[:2]

#: Extra requirements some cases need on some Pythons (from their case.json notes).
EXTRA_REQUIREMENTS: dict[tuple[str, str], list[str]] = {
    # httpie 0.9.3 imports pkg_resources; 3.12 venvs ship without setuptools.
    ("httpie-session-none-header", "3.12"): ["setuptools<70"],
    ("httpie-session-none-header", "3.13"): ["setuptools<70"],
}


def shared_dir() -> Path | None:
    """``$CODESUTURE_SHARED`` or ``../shared`` beside the checkout, when present."""
    env = os.environ.get("CODESUTURE_SHARED")
    p = Path(env) if env else Path(__file__).resolve().parents[2] / "shared"
    return p if p.is_dir() else None


def crashes_dir() -> Path | None:
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

    def extra_requirements(self, version: str = HERE_VERSION) -> list[str]:
        return EXTRA_REQUIREMENTS.get((self.id, version), [])

    def skip_reason(self, version: str = HERE_VERSION) -> str | None:
        """Why this case does not run on *version*, or None."""
        if version not in self.versions:
            note = self.data.get(f"python_{version.replace('.', '_')}", "")
            return (f"{self.id} is verified on Python {', '.join(self.versions)} only, not {version}"
                    + (f": {note}" if note else ""))
        return None


def load_cases() -> list[CrashCase]:
    root = crashes_dir()
    if root is None:
        return []
    out = []
    for d in sorted(p for p in root.iterdir() if (p / "case.json").is_file()):
        data = json.loads((d / "case.json").read_text())
        versions = tuple(sorted({".".join(v.split(".")[:2]) for v in data.get("python_versions_verified", [])}))
        out.append(CrashCase(data.get("id", d.name), d, data["pip_spec"], versions, data))
    return out


def this_site_packages() -> str:
    return sysconfig.get_paths()["purelib"]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODESUTURE_") and k != "PYTHONPATH"}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def make_venv(where: Path, python: str = PY) -> Path:
    """A venv at *where* that also sees *python*'s site-packages; returns its python."""
    subprocess.run([python, "-m", "venv", "--without-pip", str(where)], check=True, capture_output=True)
    vpy = where / "bin" / "python"
    purelib = subprocess.run([str(vpy), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    # addsitedir (not a plain path line) so the editable install's own .pth files are processed.
    Path(purelib, "zz_codesuture_tests.pth").write_text(f"import site; site.addsitedir({this_site_packages()!r})\n")
    return vpy


def pip_install(vpy: Path, *requirements: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Install into the venv of *vpy* with the running interpreter's pip."""
    return subprocess.run(
        [PY, "-m", "pip", "--python", str(vpy), "install", "--disable-pip-version-check", "--no-input", "-q",
         *requirements],
        capture_output=True, text=True, timeout=timeout, env=clean_env(),
    )


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
                raise VenvError(f"pip install {case.pip_spec} failed:\n{p.stdout}{p.stderr}")
            made = vpy
        except (subprocess.SubprocessError, OSError) as exc:
            made = VenvError(f"venv for {case.id}: {exc}")
        _MADE[key] = made
    if isinstance(made, VenvError):
        raise made
    return made
