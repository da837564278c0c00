"""Helpers for the heal-side tests: run ``codesuture run`` / ``codesuture.boot`` in a
subprocess, inspect overlay directories, and build throwaway venvs that see this
interpreter's packages (codesuture and its dependencies) through a ``.pth`` file.
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from dataclasses import dataclass
from pathlib import Path

PY = sys.executable
TAG = sys.implementation.cache_tag
REPO = Path(__file__).resolve().parents[1]
#: Rows of the real-crash report (tests/test_crashes.py), printed by conftest.py.
CRASH_REPORT: list[dict] = []


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a child: no CODESUTURE_* settings or PYTHONPATH leaking in
    from the test runner, unbuffered output, plus *extra*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODESUTURE_") and k != "PYTHONPATH"}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


@dataclass
class Proc:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return (f"$ {' '.join(map(str, self.args))}\n-- rc {self.returncode}\n-- stdout\n{self.stdout}"
                f"-- stderr\n{self.stderr}")

    def results(self) -> list[str]:
        """The ``RESULT ...`` lines the generated scripts print."""
        return [line for line in self.stdout.splitlines() if line.startswith("RESULT ")]


def run(args: list[str | os.PathLike[str]], cwd: str | os.PathLike[str], env: dict[str, str] | None = None,
        timeout: float = 120) -> Proc:
    args = [os.fspath(a) for a in args]
    p = subprocess.run(args, cwd=cwd, env=env if env is not None else clean_env(), capture_output=True,
                       text=True, timeout=timeout)
    return Proc(args, p.returncode, p.stdout, p.stderr)


def heal(script: Path, overlays: Path, *options: str, python: str = PY, args: tuple[str, ...] = (),
         cwd: Path | None = None, env: dict[str, str] | None = None) -> Proc:
    """``python -m codesuture run --overlays D [options] script [args]``."""
    return run([python, "-m", "codesuture", "run", "--overlays", str(overlays), *options, str(script), *args],
               cwd or script.parent, env)


def boot(script: Path, overlays: Path, *options: str, python: str = PY, args: tuple[str, ...] = (),
         cwd: Path | None = None, env: dict[str, str] | None = None, no_heal: bool = True) -> Proc:
    """``python -m codesuture.boot --overlays D [--no-heal] [options] script [args]``."""
    flags = ["--no-heal"] if no_heal else []
    return run([python, "-m", "codesuture.boot", "--overlays", str(overlays), *flags, *options, str(script), *args],
               cwd or script.parent, env)


def plain(script: Path, *args: str, python: str = PY, cwd: Path | None = None,
          env: dict[str, str] | None = None) -> Proc:
    return run([python, str(script), *args], cwd or script.parent, env)


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file in *directory* (recursively) by relative path -> bytes."""
    if not directory.exists():
        return {}
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def overlays_in(directory: Path) -> list[str]:
    """Names of the ``.overlay`` files in *directory*."""
    if not directory.exists():
        return []
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".overlay"))


def script_key(path: Path) -> str:
    from codesuture.overlay.store import script_key as key

    return key(path)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


# --- throwaway venvs -------------------------------------------------------------------

def this_site_packages() -> str:
    return sysconfig.get_paths()["purelib"]


def make_venv(where: Path, python: str = PY) -> Path:
    """A fresh ``python -m venv --without-pip`` at *where* whose ``site-packages`` holds
    a ``.pth`` that adds this interpreter's ``site-packages`` (processing its own
    ``.pth`` files, so the editable codesuture install is seen). Returns its python."""
    subprocess.run([python, "-m", "venv", "--without-pip", str(where)], check=True, capture_output=True)
    vpy = where / "bin" / "python"
    purelib = subprocess.run([str(vpy), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    Path(purelib, "zz_codesuture_tests.pth").write_text(
        f"import site; site.addsitedir({this_site_packages()!r})\n"
    )
    return vpy


def pip_install(vpy: Path, *requirements: str, timeout: float = 600) -> Proc:
    """Install into the venv of *vpy* with this interpreter's pip (``pip --python``)."""
    return run([PY, "-m", "pip", "--python", str(vpy), "install", "--disable-pip-version-check",
                "--no-input", "-q", *requirements], vpy.parent, clean_env(), timeout=timeout)


def build_wheel(out_dir: Path, name: str, version: str, files: dict[str, str]) -> Path:
    """A minimal pure-Python wheel holding *files* (path in the wheel -> text)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    dist_info = f"{name}-{version}.dist-info"
    members = dict(files)
    members[f"{dist_info}/METADATA"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    members[f"{dist_info}/WHEEL"] = ("Wheel-Version: 1.0\nGenerator: codesuture-tests\n"
                                    "Root-Is-Purelib: true\nTag: py3-none-any\n")
    record = []
    for path, text in members.items():
        data = text.encode()
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist_info}/RECORD,,")
    members[f"{dist_info}/RECORD"] = "\n".join(record) + "\n"
    wheel = out_dir / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, text in members.items():
            zf.writestr(path, text)
    return wheel
