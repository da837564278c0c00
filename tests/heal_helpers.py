"""Helpers for the heal-side tests, in one place: run ``codesuture run`` /
``codesuture.boot`` / the CLI in a subprocess with a clean environment (its own host
state folder), inspect overlay directories, find other interpreters, locate
``../shared``, and build throwaway venvs that see this interpreter's packages
(codesuture and its dependencies) through a ``.pth`` file (the real crash cases'
venvs, tests/crash_venvs.py, are built with them).
"""

from __future__ import annotations

import atexit
import base64
import hashlib
import importlib
import itertools
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PY = sys.executable
TAG = sys.implementation.cache_tag
REPO = Path(__file__).resolve().parents[1]
#: Rows of the real-crash report (tests/test_crashes.py), printed by conftest.py.
CRASH_REPORT: list[dict] = []


_STATE: str | None = None


def state_dir() -> str:
    """The host-state folder children get (never the user's own): the current test's
    (conftest.py sets one per test with :func:`use_state_dir`, so a rollback recorded
    by one test never withdraws the identical overlay bytes another test builds), else
    one for the session."""
    global _STATE
    if _STATE is None:
        import tempfile

        _STATE = tempfile.mkdtemp(prefix="codesuture-test-state-")
        atexit.register(shutil.rmtree, _STATE, True)
    return _STATE


def use_state_dir(path: str | os.PathLike[str]) -> None:
    global _STATE
    _STATE = os.fspath(path)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a child: no CODESUTURE_* settings or PYTHONPATH leaking in
    from the test runner, the test's own host-state folder (:func:`state_dir`), unbuffered output, plus
    *extra*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODESUTURE_") and k != "PYTHONPATH"}
    env["PYTHONUNBUFFERED"] = "1"
    env["CODESUTURE_STATE_DIR"] = state_dir()
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


def cli(*args: str | os.PathLike[str], cwd: str | os.PathLike[str], python: str = PY,
        env: dict[str, str] | None = None, timeout: float = 120) -> Proc:
    """``python -m codesuture ARGS...`` (keygen, sign, audit, rollback...)."""
    return run([python, "-m", "codesuture", *args], cwd, env, timeout)


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


def script_key(path: Path, app_root: Path | None = None) -> str:
    """Store key of *path* run as ``__main__`` (its app root: the nearest folder with
    pyproject.toml, else its own folder)."""
    from codesuture.overlay.names import main_key, script_origin
    from codesuture.settings import find_app_root

    root = str(app_root) if app_root else find_app_root(str(path.parent))
    return main_key(script_origin(str(path), root))


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


# --- other interpreters, ../shared ----------------------------------------------------

def shared_dir() -> Path | None:
    """``$CODESUTURE_SHARED`` or ``../shared`` beside the checkout, when present."""
    env = os.environ.get("CODESUTURE_SHARED")
    p = Path(env) if env else REPO.parent / "shared"
    return p if p.is_dir() else None


def python_for(version: str) -> str | None:
    """An interpreter of Python *version* (``3.X``) that imports codesuture and
    bytecode: the repo's ``.venv-3.X``, else ``python3.X`` from pyenv or PATH (None
    when there is none). Never a machine path."""
    candidates = [REPO / f".venv-{version}" / "bin" / "python"]
    pyenv = shutil.which("pyenv")
    if pyenv:
        found = subprocess.run([pyenv, "prefix", version], capture_output=True, text=True)
        if found.returncode == 0 and found.stdout.strip():
            candidates.append(Path(found.stdout.strip().splitlines()[0], "bin", f"python{version}"))
    on_path = shutil.which(f"python{version}")
    if on_path:
        candidates.append(Path(on_path))
    for cand in candidates:
        if cand.exists() and subprocess.run([str(cand), "-c", "import codesuture.cli, bytecode"], env=clean_env(),
                                            capture_output=True).returncode == 0:
            return str(cand)
    return None


def other_pythons() -> list[str]:
    """Interpreters of the other supported minor versions (see :func:`python_for`)."""
    mine = "%d.%d" % sys.version_info[:2]
    return [py for v in ("3.11", "3.12", "3.13") if v != mine and (py := python_for(v))]


# --- throwaway venvs -------------------------------------------------------------------

def this_site_packages() -> str:
    return sysconfig.get_paths()["purelib"]


def make_venv(where: Path, python: str = PY) -> Path:
    """A fresh ``python -m venv --without-pip`` at *where* whose ``site-packages`` holds
    a ``.pth`` that adds this interpreter's ``site-packages`` (with ``addsitedir``, so
    its own ``.pth`` files are processed and the editable codesuture install is seen).
    Returns its python."""
    subprocess.run([python, "-m", "venv", "--without-pip", str(where)], check=True, capture_output=True)
    vpy = where / "bin" / "python"
    purelib = subprocess.run([str(vpy), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    Path(purelib, "zz_codesuture_tests.pth").write_text(
        f"import site; site.addsitedir({this_site_packages()!r})\n"
    )
    return vpy


def pip_install(vpy: Path, *requirements: str, timeout: float = 900) -> Proc:
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


def as_data(fn: Any, *args: Any) -> Any:
    """Call *fn* and hand its result on as data (kept in a list, read back), so the
    value-flow model sees a caller that stores it, not one that decides with it (an
    ``assert`` on a returned default would make the guard decline:
    ``tests/test_value_flow.py``)."""
    box: list[Any] = []
    box.append(fn(*args))
    return box[0]


_SOURCE_MODULES = itertools.count()


def import_source(tmp_path: Path, source: str, prefix: str = "case", name: str | None = None) -> Any:
    """Write *source* (dedented) to ``tmp_path/<name>.py`` and import it: a fresh module
    each call (``<prefix>_<n>``, *n* unique in the process, unless *name* is given)."""
    name = name or f"{prefix}_{next(_SOURCE_MODULES)}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    sys.path.insert(0, str(tmp_path))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(tmp_path))


def crash_of(fn: Any, *args: Any) -> BaseException:
    """The exception ``fn(*args)`` raises (caught broadly: a handler naming its type
    would make the crash one the program handles, EAFP); AssertionError if none."""
    try:
        fn(*args)
    except Exception as exc:  # noqa: BLE001 - broad on purpose
        return exc
    raise AssertionError("no crash")
