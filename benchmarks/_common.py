"""Shared helpers for the benchmark scripts (not a benchmark itself).

Everything here is standard library only, so importing it costs the same under every
variant being compared. Child processes get a clean environment:

* no ``CODESUTURE_*`` variables (the kill switch, overlay paths... of the caller),
* ``PYTHONDONTWRITEBYTECODE`` removed and ``PYTHONPYCACHEPREFIX`` pointed at a private
  temporary directory, so modules (CodeSuture's, the standard library's, the app's) load
  from cached ``.pyc`` files as they do on a deployed machine, without writing
  ``__pycache__`` folders into the source tree. ``--no-pyc`` keeps the caller's
  bytecode setting instead (e.g. to see the cost of compiling from source each start).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def pyperformance_benchmarks_dir() -> Path:
    """``.../pyperformance/data-files/benchmarks`` of the installed pyperformance."""
    try:
        import pyperformance
    except ImportError:
        sys.exit("pyperformance is not installed in this interpreter (pip install 'codesuture[bench]')")
    root = Path(pyperformance.__file__).resolve().parent / "data-files" / "benchmarks"
    if not root.is_dir():
        sys.exit(f"pyperformance {pyperformance.__version__} has no data-files/benchmarks at {root}")
    return root


def child_env(pycache: str | None, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODESUTURE_")}
    if pycache is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = pycache
    env.update(extra or {})
    return env


def make_pycache(args) -> tuple[str | None, tempfile.TemporaryDirectory | None]:
    if getattr(args, "no_pyc", False):
        return None, None
    tmp = tempfile.TemporaryDirectory(prefix="codesuture-bench-pyc-")
    return tmp.name, tmp


def run(cmd: list[str], *, env: dict[str, str], cwd: str, capture: bool = True, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    if check and proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return proc


def timed_run(cmd: list[str], *, env: dict[str, str], cwd: str) -> float:
    """Wall time of one child process, in seconds (output discarded)."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr.decode()[-3000:]}")
    return dt


def order(round_no: int) -> tuple[int, int]:
    """ABBA interleaving: variant order alternates every round so drift cancels."""
    return (0, 1) if round_no % 2 == 0 else (1, 0)


def median(xs) -> float:
    return statistics.median(xs)


def quartiles(xs) -> tuple[float, float]:
    xs = sorted(xs)
    if len(xs) < 4:
        return xs[0], xs[-1]
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], q[2]


def header(title: str) -> None:
    print(f"# {title}")
    print(f"# python {platform.python_version()} ({sys.executable})")
    print(f"# {platform.platform()}, {os.cpu_count()} CPU(s), load average {os.getloadavg()[0]:.2f}")
    print(f"# pid {os.getpid()}, {time.strftime('%Y-%m-%d %H:%M:%S')}, codesuture tree {_tree_state()}")


def _tree_state() -> str:
    """Commit of the source tree being measured, and whether src/ has local changes."""
    try:
        repo = str(HERE.parent)
        head = subprocess.run(["git", "-C", repo, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(["git", "-C", repo, "status", "--porcelain", "--", "src"], capture_output=True, text=True)
        n = len(dirty.stdout.splitlines())
        return head.stdout.strip() + (f" + {n} uncommitted change(s) in src/" if n else "")
    except OSError:
        return "(git unavailable)"


def verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"


def dump_json(path: str | None, data: dict) -> None:
    if path:
        Path(path).write_text(json.dumps(data, indent=2))


def import_culprits(boot_args: list[str], *, env: dict[str, str], cwd: str) -> dict[str, str]:
    """module -> innermost CodeSuture frame (``module:function:line``) that imported it,
    from one run of ``python -m codesuture.boot *boot_args`` under an audit hook."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        out = fh.name
    try:
        run([sys.executable, str(HERE / "_import_culprits.py"), out, "-m", "codesuture.boot", *boot_args],
            env=env, cwd=cwd)
        return json.loads(Path(out).read_text())
    finally:
        os.unlink(out)
