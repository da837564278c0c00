"""Rebuild overlays from their source and recorded patches, on any interpreter.

An overlay is a pure function of (source bytes, origin, patch records, interpreter):
:func:`codesuture.overlay.build.build_overlay` compiles the source under its portable
origin as file name (so no machine path is marshalled into it), applies the records
and marshals. For another interpreter, the same work runs in that interpreter: it is
started as ``PYTHON -I -m codesuture.ship.rebuild`` with a JSON request on stdin and
answers JSON on stdout. Two operations:

* ``build``: records made on that interpreter -> overlay bytes (``codesuture sign``
  compares them with the overlay it is asked to sign);
* ``relocate``: records made on *another* interpreter -> records re-located by source
  position for this one (:mod:`codesuture.patch.relocate`), the overlay built from
  those that re-locate, and the list of those that do not (``codesuture rebuild``).

Request: ``{"op": "build"|"relocate", "filename": "<origin>", "app_root": "<dir>",
"source_sha256": "<hex>", "records": [<PatchRecord.to_json()>, ...]}``: the worker finds
the source from the origin (:func:`codesuture.overlay.names.resolve_origin`: an
installed module in *its* site-packages) and checks its SHA-256; ``"source":
"<base64>"`` instead gives the bytes. Answer: ``{"ok": true, "cache_tag": ...,
"source_path": ..., "overlay": "<base64>", "records": [...], "failed": [{"record": ...,
"reason": ...}]}`` or ``{"ok": false, "error": "..."}``.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from typing import Any, Sequence

from codesuture.errors import CodeSutureError, PatchError, TrustError
from codesuture.patch.spec import PatchRecord

#: Seconds a worker interpreter may take before it is killed.
WORKER_TIMEOUT = 120


def build_local(source: bytes, origin: str, records: Sequence[PatchRecord]) -> bytes:
    """Overlay bytes for *source* compiled as *origin* with *records*, on this
    interpreter. Raises PatchError / SyntaxError."""
    from codesuture.overlay.build import build_overlay

    return build_overlay(source, origin, records)[0]


def relocate_local(source: bytes, origin: str, records: Sequence[PatchRecord]) -> tuple[bytes | None, list[PatchRecord], list[tuple[PatchRecord, str]]]:
    """Re-locate *records* (made on any interpreter) in *source* compiled here; returns
    ``(overlay bytes or None when nothing re-located, re-located records, [(record,
    why it did not re-locate)])``."""
    from codesuture.overlay.build import compile_module
    from codesuture.patch.relocate import relocate_all

    moved, failed = relocate_all(compile_module(source, origin), records)
    if not moved:
        return None, moved, failed
    return build_local(source, origin, moved), moved, failed


def find_source(origin: str, app_root: str | None, sha256: str) -> tuple[str, bytes]:
    """``(path, bytes)`` of the source *origin* names here, checked against *sha256*.
    Raises :class:`TrustError` when it is missing or differs."""
    import hashlib

    from codesuture.overlay.names import resolve_origin

    path = resolve_origin(origin, app_root)
    if path is None:
        raise TrustError(f"its source {origin} is not found here (app root {app_root})")
    with open(path, "rb") as fh:
        source = fh.read()
    if hashlib.sha256(source).hexdigest() != sha256:
        raise TrustError(f"its source {path} is not the one it was built from (SHA-256 differs)")
    return path, source


def _answer(request: dict[str, Any]) -> dict[str, Any]:
    from codesuture.overlay.model import interpreter_info

    origin = str(request["filename"])
    if "source" in request:
        source, path = base64.b64decode(request["source"]), None
    else:
        path, source = find_source(origin, request.get("app_root"), str(request["source_sha256"]))
    records = [PatchRecord.from_json(r) for r in request["records"]]
    if request["op"] == "build":
        data = build_local(source, origin, records)
        return {"ok": True, "cache_tag": sys.implementation.cache_tag, "python": interpreter_info(), "source_path": path,
                "overlay": base64.b64encode(data).decode(), "records": [r.to_json() for r in records], "failed": []}
    if request["op"] == "relocate":
        data2, moved, failed = relocate_local(source, origin, records)
        return {"ok": True, "cache_tag": sys.implementation.cache_tag, "python": interpreter_info(), "source_path": path,
                "overlay": base64.b64encode(data2).decode() if data2 is not None else None,
                "records": [r.to_json() for r in moved],
                "failed": [{"record": r.to_json(), "reason": why} for r, why in failed]}
    raise ValueError(f"unknown op {request['op']!r}")


def main() -> int:
    """The worker: one JSON request on stdin, one JSON answer on stdout."""
    try:
        answer = _answer(json.loads(sys.stdin.buffer.read()))
    except (CodeSutureError, SyntaxError, ValueError, KeyError, TypeError) as exc:
        answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    sys.stdout.write(json.dumps(answer))
    return 0


def interpreter_tag(python: str) -> str | None:
    """The cache tag of interpreter *python*, or None when it cannot be run."""
    try:
        p = subprocess.run([python, "-I", "-c", "import sys; print(sys.implementation.cache_tag)"],
                           capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return p.stdout.strip() or None if p.returncode == 0 else None


def find_interpreter(cache_tag: str, candidates: Sequence[str] = ()) -> str | None:
    """An interpreter whose cache tag is *cache_tag*: this one, one of *candidates*
    (``--python``), ``python3.X`` on ``PATH``, or one of pyenv's versions."""
    import shutil

    if cache_tag == sys.implementation.cache_tag:
        return sys.executable
    for cand in candidates:
        if interpreter_tag(cand) == cache_tag:
            return cand
    if not cache_tag.startswith("cpython-3"):
        return None
    version = "3." + cache_tag[len("cpython-3"):]
    found = shutil.which(f"python{version}")
    if found and interpreter_tag(found) == cache_tag:
        return found
    pyenv = shutil.which("pyenv")
    if pyenv:
        try:
            root = subprocess.run([pyenv, "root"], capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            root = ""
        versions = os.path.join(root, "versions") if root else ""
        if versions and os.path.isdir(versions):
            for name in sorted(os.listdir(versions), reverse=True):
                cand = os.path.join(versions, name, "bin", f"python{version}")
                if name.startswith(version + ".") and os.access(cand, os.X_OK):
                    return cand
    return None


def run_worker(python: str, op: str, origin: str, app_root: str | None, source_sha256: str,
               records: Sequence[PatchRecord]) -> dict[str, Any]:
    """Run the worker in *python* on the source *origin* names there; its answer.
    Raises :class:`TrustError` when it cannot run CodeSuture or answers with an error."""
    request = {"op": op, "filename": origin, "app_root": app_root, "source_sha256": source_sha256,
               "records": [r.to_json() for r in records]}
    try:
        p = subprocess.run([python, "-I", "-m", "codesuture.ship.rebuild"], input=json.dumps(request).encode(),
                           capture_output=True, timeout=WORKER_TIMEOUT)
    except (OSError, subprocess.SubprocessError) as exc:
        raise TrustError(f"cannot run {python}: {exc}") from None
    try:
        answer = json.loads(p.stdout)
    except ValueError:
        tail = p.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise TrustError(f"{python} cannot rebuild overlays (is codesuture installed there?): {tail[0]}") from None
    if not answer.get("ok"):
        raise TrustError(f"rebuild on {python} failed: {answer.get('error')}")
    return answer


def rebuild_bytes(origin: str, app_root: str | None, source_sha256: str, records: Sequence[PatchRecord],
                  cache_tag: str, pythons: Sequence[str] = ()) -> bytes:
    """The overlay bytes that *records* give for the source *origin* names (checked
    against *source_sha256*) on the interpreter of *cache_tag*: in-process when it is
    this one, else in that interpreter (found with :func:`find_interpreter`). Raises
    :class:`TrustError` when the source or the interpreter is not found, or the
    records do not rebuild."""
    if cache_tag == sys.implementation.cache_tag:
        _, source = find_source(origin, app_root, source_sha256)
        try:
            return build_local(source, origin, records)
        except (PatchError, SyntaxError) as exc:
            raise TrustError(f"its records do not rebuild from the source: {exc}") from None
    python = find_interpreter(cache_tag, pythons)
    if python is None:
        raise TrustError(f"no {cache_tag} interpreter to rebuild it with (pass --python PATH)")
    answer = run_worker(python, "build", origin, app_root, source_sha256, records)
    return base64.b64decode(answer["overlay"])


if __name__ == "__main__":
    sys.exit(main())
