"""Repro tests from heal-time captures, and their proof.

Captures are written at heal time by :mod:`codesuture.runtime.capture` (see there for
what is recorded and where); this module reads them back.

**Repro tests** (:func:`write_tests`, ``codesuture repro STORE -o DIR``): one pytest
file per patch with a capture. It imports the module, resolves the function by its
qualified name, loads the captured arguments (embedded in the file, with their
SHA-256), calls it, and fails when the original exception is raised again through the
patched function. When the call cannot be made (a function of the script itself, a
nested function, an argument not captured) but the program's argv is known, the test
runs the program instead (with the overlays when it runs under boot). A capture that
allows neither gives a test that skips and says why.

**Proof** (:func:`prove`, ``codesuture repro --prove``): each test runs twice in a
subprocess: without this patch (under boot with a copy of the store minus this patch,
every other patch in place: must fail with the original exception) and under boot
with the store (``python -m codesuture.boot --overlays STORE --no-heal
--require-overlays -m pytest FILE``: must pass). The result (test SHA-256, both
outcomes, interpreter, the overlay's SHA-256, the test's path relative to the store)
is written into the patch record's
``evidence["proof"]`` in the sidecar, so ``codesuture sign`` puts it into the signed
Statement; ``sign --require-evidence`` refuses a patch without a passing proof.

The captured pickle is data from the healed process: loading it runs whatever its
classes' ``__reduce__`` says, so a repro test is as trusted as the store it came from
(``repro`` itself never unpickles anything).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from typing import Any, Sequence

from codesuture.errors import CodeSutureError, FileError, OverlayError
from codesuture.logs import logger
from codesuture.runtime.capture import FORMAT, REPRO_SUFFIX, site_name

log = logger("codesuture.repro")

#: Caps when reading captures back (the setting may raise the capture cap; reading stays bounded).
MAX_DESCRIPTOR_BYTES = 1024 * 1024
MAX_ARGS_BYTES = 16 * 1024 * 1024
#: The environment variable a repro test writes its outcome to (JSON), when set.
RESULT_ENV = "CODESUTURE_REPRO_RESULT"
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")

# --------------------------------------------------------------------------- reading captures


@dataclass
class Capture:
    """One capture read back: its overlay (stem, sidecar metadata), the patch record
    it belongs to, the descriptor and the pickled arguments (None when absent)."""

    store: str
    stem: str
    meta: Any
    record: Any
    descriptor: dict[str, Any]
    data: bytes | None

    @property
    def name(self) -> str:
        return site_name(self.record.qualname, self.record.firstlineno, self.record.offset)


@dataclass
class Missing:
    """A patch without a usable capture, and why."""

    stem: str
    record: Any
    reason: str


def _repro_dir(store: str, stem: str) -> str | None:
    """``<stem>.repro`` when it is a real folder (not a link), else None."""
    import stat

    path = os.path.join(store, stem + REPRO_SUFFIX)
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return path if stat.S_ISDIR(st.st_mode) else None


def read_captures(store: str, function: str | None = None) -> tuple[list[Capture], list[Missing]]:
    """The captures of every patch in the folder *store* (only patches of *function*,
    qualified or plain name, when given), read with the store's rules (regular files,
    size caps, links only inside the store). Raises :class:`OverlayError` when the
    store cannot be listed."""
    from codesuture.overlay.model import OverlayMeta
    from codesuture.overlay.names import MAX_META_BYTES, META_SUFFIX
    from codesuture.review.explain import matches_function
    from codesuture.store.directory import DirectoryStore
    from codesuture.util.files import read_regular

    ds = DirectoryStore(store, budget=None)
    root = os.path.realpath(store)
    found: list[Capture] = []
    missing: list[Missing] = []
    for entry in ds.entries():
        try:
            raw = entry.read(META_SUFFIX, MAX_META_BYTES)
            if raw is None:
                continue
            meta = OverlayMeta.loads(raw, entry.path(META_SUFFIX))
        except CodeSutureError as exc:
            log.warning("skipping %s: %s", entry.name, getattr(exc, "reason", exc))
            continue
        rdir = _repro_dir(store, entry.name)
        for record in meta.patches:
            if function is not None and not matches_function(record.qualname, function):
                continue
            name = site_name(record.qualname, record.firstlineno, record.offset)
            if rdir is None:
                missing.append(Missing(entry.name, record, "no capture (healed with repro capture off, or before it existed)"))
                continue
            try:
                desc_raw = read_regular(os.path.join(rdir, name + ".json"), MAX_DESCRIPTOR_BYTES, root=root)
                if desc_raw is None:
                    missing.append(Missing(entry.name, record, "no capture for this patch"))
                    continue
                desc = json.loads(desc_raw)
                if not isinstance(desc, dict) or desc.get("format") != FORMAT:
                    raise OverlayError(name + ".json", "not a repro descriptor of this CodeSuture")
                if (desc.get("qualname"), desc.get("firstlineno"), desc.get("offset")) != record.site:
                    raise OverlayError(name + ".json", "describes another patch")
                data = None
                args = desc.get("arguments")
                if isinstance(args, dict):
                    data = read_regular(os.path.join(rdir, name + ".pkl"), MAX_ARGS_BYTES, root=root)
                    if data is None or hashlib.sha256(data).hexdigest() != args.get("sha256"):
                        raise OverlayError(name + ".pkl", "missing, or not the arguments its descriptor names")
            except (FileError, ValueError) as exc:
                missing.append(Missing(entry.name, record, f"unusable capture: {getattr(exc, 'reason', exc)}"))
                continue
            found.append(Capture(store, entry.name, meta, record, desc, data))
    return found, missing


# --------------------------------------------------------------------------- tests


@dataclass
class ReproTest:
    """A written repro test: its file, the capture, how it reproduces (``call``,
    ``program`` or ``none``: it skips, ``why``)."""

    path: str
    capture: Capture
    by: str
    why: str = ""

    @property
    def sha256(self) -> str:
        with open(self.path, "rb") as fh:
            return hashlib.sha256(fh.read()).hexdigest()


def _how(c: Capture) -> tuple[str, str]:
    """``(by, why not by call)`` for capture *c*."""
    d = c.descriptor
    why = ""
    if d.get("module") == "__main__":
        why = "a function of the script itself"
    elif d.get("missing"):
        why = str(d["missing"])
    elif not d.get("callable"):
        why = f"{c.record.qualname} cannot be called by its name (nested, or wrapped)"
    elif d.get("kind") == "asyncgen":
        why = "an async generator"
    elif c.data is None:
        bad = [f"{p.get('name')}: {p.get('status')}" + (f" ({p['reason']})" if p.get("reason") else "")
               for p in d.get("parameters", []) if p.get("status") != "captured"]
        why = "arguments not captured: " + ("; ".join(bad) if bad else "none recorded")
    if not why:
        return "call", ""
    prog = d.get("program")
    if isinstance(prog, dict) and prog.get("kind") in ("script", "module"):
        if prog.get("argv_redacted"):
            return "none", f"{why}; and the program's argv was redacted"
        if not prog.get("main_thread", True):
            # a worker or request thread: running the program again would start the server
            return "none", f"{why}; and it crashed outside the program's main thread (a server or worker)"
        return "program", why
    return "none", why


def repro_file_name(c: Capture) -> str:
    mod = _SAFE.sub("_", str(c.descriptor.get("module", "m"))).replace(".", "_").replace("-", "_")
    return f"test_repro_{mod}_{c.name.replace('.', '_').replace('-', '_')}.py"


def write_tests(store: str, out_dir: str, function: str | None = None) -> tuple[list[ReproTest], list[Missing]]:
    """Write one pytest file per patch of *store* that has a capture into *out_dir*;
    return the tests and the patches without one (and why)."""
    from codesuture.util.files import atomic_write

    captures, missing = read_captures(store, function)
    os.makedirs(out_dir, exist_ok=True)
    tests = []
    for c in captures:
        by, why = _how(c)
        path = os.path.join(out_dir, repro_file_name(c))
        atomic_write(path, render(c, out_dir, by, why).encode("utf-8"))
        tests.append(ReproTest(path, c, by, why))
    return tests, missing


def _local(c: Capture, rel: str, out_dir: str) -> str:
    """A path recorded relative to the store, relative to *out_dir*."""
    full = os.path.normpath(os.path.join(os.path.abspath(c.store), rel))
    return os.path.relpath(full, os.path.abspath(out_dir)).replace(os.sep, "/")


def render(c: Capture, out_dir: str, by: str, why: str) -> str:
    """The source of the repro test for capture *c*, written into *out_dir*."""
    import base64

    d = c.descriptor
    exc = str(d.get("exception") or "the exception")
    fname = repro_file_name(c)
    store_hint = os.path.relpath(os.path.abspath(c.store), os.path.abspath(out_dir)).replace(os.sep, "/")
    how = {"call": "calls the function with the captured arguments",
           "program": f"runs the program with its captured argv (the call itself cannot be made: {why})",
           "none": f"cannot reproduce the crash and skips: {why}"}[by]
    prog: dict[str, Any] = d["program"] if isinstance(d.get("program"), dict) else {}
    lines = [
        f'"""Repro of a CodeSuture patch: {c.record.qualname} in {d.get("module")} ({exc} at line {c.record.line}).',
        "",
        f"Generated by `codesuture repro` from the capture taken when the crash was healed",
        f"({d.get('capturedAt')}, Python {d.get('interpreter', {}).get('version')}). The test {how}.",
        f"It fails when {exc} is raised again through {c.record.qualname}.",
        "",
        "With the overlay (must pass):",
        f"    python -m codesuture.boot --overlays {store_hint} --no-heal -m pytest {fname}",
        f"Without it (must fail with {exc}: the crash reproduces):",
        f"    python -m pytest {fname}",
        "`codesuture repro --prove` runs both and records the outcome in the patch's evidence.",
        "The captured arguments below are pickled data from the healed process: trust this file",
        "as much as the store it came from.",
        '"""',
        "",
        "import base64",
        "import hashlib",
        "import json",
        "import os",
        "import pickle",
        "import sys",
        "",
        "import pytest",
        "",
        f"MODULE = {d.get('module')!r}",
        f"QUALNAME = {c.record.qualname!r}",
        f"ORIGINAL = {d.get('exception_type')!r}",
        f"KIND = {d.get('kind', 'function')!r}",
        f"BY = {by!r}",
        f"WHY = {why!r}",
        f"PATHS = {[_local(c, p, out_dir) for p in d.get('paths', [])]!r}",
    ]
    if by == "call" and c.data is not None:
        enc = base64.b64encode(c.data).decode()
        lines.append(f"INPUTS_SHA256 = {hashlib.sha256(c.data).hexdigest()!r}")
        lines.append("INPUTS = (")
        lines += [f"    {enc[i:i + 96]!r}" for i in range(0, len(enc), 96)]
        lines.append(")")
    else:
        lines += ["INPUTS_SHA256 = ''", "INPUTS = ()"]
    if by == "program":
        target = (["-m", prog["name"]] if prog.get("kind") == "module" else [_local(c, prog.get("path", ""), out_dir)])
        lines.append(f"PROGRAM = {target!r}")
        lines.append(f"ARGV = {list(prog.get('argv', []))!r}")
        lines.append(f"CWD = {_local(c, prog.get('cwd', '.'), out_dir)!r}")
    else:
        lines += ["PROGRAM = []", "ARGV = []", "CWD = '.'"]
    lines.append("")
    return "\n".join(lines) + _BODY


_BODY = r'''
HERE = os.path.dirname(os.path.abspath(__file__))


def _result(outcome, exception=None):
    """Tell `codesuture repro --prove` what happened (when it asks)."""
    path = os.environ.get("CODESUTURE_REPRO_RESULT")
    if path:
        with open(path, "w", encoding="utf-8") as fh:
            json.dump({"outcome": outcome, "exception": exception}, fh)


def _is_original(exc):
    return any(f"{c.__module__}.{c.__qualname__}" == ORIGINAL for c in type(exc).__mro__)


def _through_patched_function(exc):
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_qualname == QUALNAME:
            return True
        tb = tb.tb_next
    return False


def _target():
    import importlib
    import types

    for rel in PATHS:
        path = os.path.normpath(os.path.join(HERE, rel))
        if path not in sys.path:
            sys.path.insert(0, path)
    obj = importlib.import_module(MODULE)
    for part in QUALNAME.split("."):
        obj = obj.__dict__[part]
    if isinstance(obj, (staticmethod, classmethod)):
        obj = obj.__func__
    if isinstance(obj, property):
        obj = obj.fget
    return obj


def _inputs():
    data = base64.b64decode("".join(INPUTS))
    assert hashlib.sha256(data).hexdigest() == INPUTS_SHA256, "the captured arguments were changed"
    loaded = pickle.loads(data)
    return loaded["args"], loaded["kwargs"]


def _call(fn, args, kwargs):
    out = fn(*args, **kwargs)
    if KIND == "generator":
        return list(out)
    if KIND == "coroutine":
        import asyncio

        return asyncio.run(out)
    return out


def _run_program():
    import subprocess

    command = [sys.executable]
    overlays = os.environ.get("CODESUTURE_OVERLAYS")
    if overlays:  # running under codesuture.boot: the program gets the same store
        command += ["-m", "codesuture.boot", "--overlays", overlays, "--no-heal"]
    target = PROGRAM if PROGRAM[0] == "-m" else [os.path.normpath(os.path.join(HERE, PROGRAM[0]))]
    return subprocess.run(command + target + ARGV, cwd=os.path.normpath(os.path.join(HERE, CWD)),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)


def _last_exception(stderr):
    lines = [x for x in stderr.splitlines() if x and not x.startswith((" ", "codesuture:"))]
    return lines[-1].split(":", 1)[0] if lines else ""


def test_repro():
    if BY == "none":
        _result("skipped")
        pytest.skip("not reproducible from the capture: " + WHY)
    if BY == "program":
        ran = _run_program()
        raised = _last_exception(ran.stderr)
        short = ORIGINAL.rsplit(".", 1)[-1]
        if ran.returncode != 0 and raised and (raised == short or ORIGINAL.endswith("." + raised)):
            _result("original", raised)
            pytest.fail(f"the program raised the original {raised} again: the crash reproduces", pytrace=False)
        _result("returned" if ran.returncode == 0 else "other", raised or None)
        assert ran.returncode == 0, f"the program exited {ran.returncode}:\n{ran.stderr[-2000:]}"
        return
    fn = _target()
    args, kwargs = _inputs()
    try:
        _call(fn, args, kwargs)
    except Exception as exc:
        if _is_original(exc) and _through_patched_function(exc):
            _result("original", type(exc).__name__)
            pytest.fail(f"{QUALNAME} raised the original {type(exc).__name__} again: the crash reproduces",
                        pytrace=False)
        _result("other", type(exc).__name__)
        raise
    _result("returned")
'''


# --------------------------------------------------------------------------- proof


def _interpreter(python: str) -> dict[str, str]:
    import subprocess

    code = ("import json, sys; print(json.dumps({'implementation': sys.implementation.name, "
            "'version': '%d.%d.%d' % sys.version_info[:3], 'cache_tag': sys.implementation.cache_tag or ''}))")
    p = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        raise CodeSutureError(f"{python}: cannot run it: {p.stderr.strip()[-500:]}")
    info: dict[str, str] = json.loads(p.stdout)
    return info


def child_env(**extra: str) -> dict[str, str]:
    """This environment without CodeSuture's settings (the host state folder kept),
    so the plain run is plain and the booted one gets exactly its flags."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODESUTURE_") or k == "CODESUTURE_STATE_DIR"}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra)
    return env


def boot_command(python: str, store: str, keys: str | None) -> list[str]:
    """``PY -m codesuture.boot --overlays STORE --no-heal --require-overlays [--keys K]``."""
    return [python, "-m", "codesuture.boot", "--overlays", os.path.abspath(store), "--no-heal", "--require-overlays",
            *(["--keys", os.path.abspath(keys)] if keys else [])]


@dataclass
class Proof:
    """The proof of one repro test; ``evidence`` is what goes into ``evidence["proof"]``
    (None when the test could not run on this interpreter)."""

    test: ReproTest
    passed: bool
    without: str
    with_: str
    evidence: dict[str, Any] | None = None
    recorded: str | None = None


def _outcome(rc: int, result: dict[str, Any] | None, out: str) -> str:
    if result is None:
        tail = [x for x in out.strip().splitlines() if x.strip()][-3:]
        return f"error (exit {rc}, the test did not reach the call): " + " | ".join(tail)[-400:]
    o = result.get("outcome")
    if o == "original":
        return f"raised {result.get('exception') or 'the original exception'} (the original)"
    if o == "returned":
        return "passed" if rc == 0 else f"returned, but pytest exited {rc}"
    if o == "skipped":
        return "skipped"
    return f"raised {result.get('exception') or 'another error'} (not the original)" if result.get("exception") else f"failed (exit {rc})"


def _run_one(command: list[str], test: str, result_file: str, timeout: float) -> tuple[int, dict[str, Any] | None, str]:
    """Run pytest *command* for *test*; ``(exit code, the test's result or None, output)``."""
    import subprocess

    try:
        # a repro test needs no pytest plugin (and some cost seconds to import)
        env = child_env(**{RESULT_ENV: result_file, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"})
        p = subprocess.run(command, cwd=os.path.dirname(test), env=env,
                           capture_output=True, text=True, timeout=timeout)
        rc, out = p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired:
        rc, out = -1, f"timed out after {timeout:g} s"
    try:
        with open(result_file, encoding="utf-8") as fh:
            result = json.load(fh)
    except (OSError, ValueError):
        result = None
    return rc, result, out


def store_without(c: Capture, into: str, python: str, app_root: str | None) -> str:
    """A copy of *c*'s store (unsigned: overlays and sidecars) in which *c*'s overlay is
    rebuilt without *c*'s patch (or left out when it was its only one): the store
    "without this patch", for a function whose other patches stop it earlier when
    every patch is gone. Raises :class:`CodeSutureError` when it cannot be rebuilt."""
    import shutil

    from codesuture.overlay.names import META_SUFFIX, OVERLAY_SUFFIX
    from codesuture.ship.rebuild import rebuild_bytes
    from codesuture.store.directory import DirectoryStore
    from codesuture.util.files import atomic_write

    os.makedirs(into, exist_ok=True)
    for entry in DirectoryStore(c.store, budget=None).entries():
        if entry.name != c.stem:
            for suffix in (OVERLAY_SUFFIX, META_SUFFIX):
                shutil.copyfile(os.path.join(c.store, entry.name + suffix), os.path.join(into, entry.name + suffix))
    rest = [p for p in c.meta.patches if p.site != c.record.site]
    if rest:
        tag = c.meta.python.get("cache_tag", "")
        data = rebuild_bytes(c.meta.origin, app_root, c.meta.source_sha256, rest, tag, (python,))
        meta = c.meta._replace(patches=rest, overlay_sha256=hashlib.sha256(data).hexdigest())
        atomic_write(os.path.join(into, c.stem + OVERLAY_SUFFIX), data)
        atomic_write(os.path.join(into, c.stem + META_SUFFIX), meta.dumps())
    return into


def prove(tests: Sequence[ReproTest], python: str | None = None, keys: str | None = None,
          timeout: float = 300, record: bool = True, app_root: str | None = None) -> list[Proof]:
    """Run every test without its patch (must fail with the original exception) and
    under boot with its store (must pass); record each outcome as ``evidence["proof"]``
    of its patch in the sidecar (*record*). "Without" is this patch alone taken out:
    the test runs under boot with the store minus this patch (:func:`store_without`),
    every other patch in place, so a site reached only once another is healed (a
    cascade, across overlays or within one) is proved too; only when that store
    cannot be built does it run plain, and the outcome says so. The proof names the
    test by its path relative to the store (``test_path``) and SHA-256, which ``sign
    --require-evidence`` checks. *app_root*: where ``app:`` origins are (for the
    rebuild)."""
    import tempfile

    from codesuture.overlay.names import MAX_OVERLAY_BYTES, OVERLAY_SUFFIX
    from codesuture.util.clock import iso_utc
    from codesuture.util.files import read_regular

    py = python or sys.executable
    interp = _interpreter(py)
    proofs = []
    for t in tests:
        tag = t.capture.meta.python.get("cache_tag", "")
        if tag != interp["cache_tag"]:
            why = f"not run: the overlay is for {tag}, {py} is {interp['cache_tag']} (--python)"
            proofs.append(Proof(t, False, why, why))
            continue
        test = os.path.abspath(t.path)
        with tempfile.TemporaryDirectory(prefix="codesuture-prove-") as tmp:
            ini = os.path.join(tmp, "pytest.ini")
            with open(ini, "w", encoding="utf-8") as fh:
                fh.write("[pytest]\n")
            pytest_args = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "--noconftest", "-c", ini,
                           "--rootdir", os.path.dirname(test), test]
            # "Without" means without THIS patch, every other patch in place: in a cascade
            # (site B is reached only once site A is healed) a run with no overlay at all
            # stops at A and proves nothing about B.
            try:
                minus: str | None = store_without(t.capture, os.path.join(tmp, "minus"), py, app_root)
                note = ""
            except CodeSutureError as exc:
                minus, note = None, f" (the store minus this patch cannot be built: {getattr(exc, 'reason', exc)}; plain run)"
            if minus is not None:
                rc, result, out = _run_one([*boot_command(py, minus, None), *pytest_args], test,
                                           os.path.join(tmp, "without.json"), timeout)
                without = f"{_outcome(rc, result, out)} with the store minus this patch"
            else:
                rc, result, out = _run_one([py, *pytest_args], test, os.path.join(tmp, "without.json"), timeout)
                without = _outcome(rc, result, out) + note
            ok_without = result is not None and result.get("outcome") == "original" and rc != 0
            rc, result, out = _run_one([*boot_command(py, t.capture.store, keys), *pytest_args], test,
                                       os.path.join(tmp, "with.json"), timeout)
            with_ = _outcome(rc, result, out)
            ok_with = result is not None and result.get("outcome") == "returned" and rc == 0
        passed = ok_without and ok_with
        data = read_regular(os.path.join(t.capture.store, t.capture.stem + OVERLAY_SUFFIX), MAX_OVERLAY_BYTES)
        evidence = {
            "test": os.path.basename(t.path), "test_sha256": t.sha256, "by": t.by,
            "test_path": os.path.relpath(test, os.path.abspath(t.capture.store)).replace(os.sep, "/"),
            "without": without, "with": with_, "passed": passed,
            "interpreter": interp, "overlay_sha256": hashlib.sha256(data or b"").hexdigest(),
            "provedAt": iso_utc(time.time()),
        }
        proof = Proof(t, passed, without, with_, evidence)
        if record:
            proof.recorded = record_evidence(t.capture.store, t.capture.stem, [t.capture.record.site], "proof", evidence)
        proofs.append(proof)
    return proofs


def record_evidence(store: str, stem: str, sites: Sequence[tuple[str, int, int]] | None, name: str,
                    value: dict[str, Any]) -> str:
    """Set ``evidence[name] = value`` on the records of overlay *stem* at *sites* (all
    when None) in its sidecar, under the store's lock for its key; returns the sidecar
    path. A signed overlay keeps its old signature until it is signed again (logged).
    Raises :class:`OverlayError` when the sidecar cannot be read or written."""
    from codesuture.overlay.model import OverlayMeta
    from codesuture.overlay.names import ENVELOPE_SUFFIX, MAX_META_BYTES, META_SUFFIX, SET_NAME, parse_stem
    from codesuture.util.files import atomic_write, locked, read_regular

    parsed = parse_stem(stem)
    if parsed is None:
        raise OverlayError(stem, "not an overlay name")
    path = os.path.join(store, stem + META_SUFFIX)
    with locked(os.path.join(store, f".{parsed[0]}.lock")):
        raw = read_regular(path, MAX_META_BYTES, root=os.path.realpath(store))
        if raw is None:
            raise OverlayError(path, "metadata sidecar is missing")
        meta = OverlayMeta.loads(raw, path)
        wanted = None if sites is None else set(sites)
        patches = [p._replace(evidence={**dict(p.evidence or {}), name: value})
                   if wanted is None or p.site in wanted else p for p in meta.patches]
        try:
            atomic_write(path, meta._replace(patches=patches).dumps())
        except OSError as exc:
            raise OverlayError(path, f"cannot write: {exc.strerror or exc}") from None
    if os.path.lexists(os.path.join(store, stem + ENVELOPE_SUFFIX)) or os.path.lexists(os.path.join(store, SET_NAME)):
        log.warning("%s is signed: sign the folder again to put the new evidence into its Statement", stem)
    return path


__all__ = ["read_captures", "write_tests", "render", "prove", "record_evidence", "Capture", "Missing", "ReproTest",
           "Proof", "child_env", "boot_command"]
