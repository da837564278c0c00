"""Repro capture at heal time, repro tests, and their proof.

**Capture** (:func:`capture`, called by the healer after a new patch was written; slow
path only, never raises). From the traceback's frame of the patched function it takes
the call: module, qualified name, and the values of its parameters in order
(``*args``/``**kwargs`` included) as they were when it crashed, pickled together
(protocol 4) through a writer that stops at ``repro_max_bytes`` (default 64 KiB), so a
huge argument costs at most that much work. A parameter whose name matches one of the
``repro_redact`` patterns (``*password*``, ``*token*``, ``*secret*``, ``*key*``, ...;
case-insensitive; for ``**kwargs`` each key) is never captured; a value pickle refuses
(a lock, a socket, a lambda, an instance of a class defined in the script), or whose
pickle does not load back (checked once, in process), is recorded as *not capturable*
with a short ``repr`` of a deep copy. Also recorded: the
interpreter, the distributions involved (the one owning the patched module and those
owning the arguments' types, from their ``RECORD``/metadata) and, for a program run
from a script or ``-m``, its argv (options named like a redaction pattern have their
value replaced) and working directory. Files (mode 0600, folder 0700), beside the
overlay and never inside it::

    <store>/<stem>.repro/<qualname>.<firstlineno>.<offset>.json   the descriptor
    <store>/<stem>.repro/<qualname>.<firstlineno>.<offset>.pkl    the arguments (only when every one was captured)

The loader never looks at them (the store index only takes ``*.overlay`` names), a
signed set never pins them, a bundle never carries them. Paths inside a descriptor are
relative to the store folder. Capture is off unless ``repro`` is set
(``CODESUTURE_REPRO=1`` or ``repro = true`` in the config): arguments are users' data,
and by default a heal writes no data values anywhere (exception messages are redacted
too unless ``--record-messages``).

**Repro tests** (:func:`write_tests`, ``codesuture repro STORE -o DIR``): one pytest
file per patch with a capture. It imports the module, resolves the function by its
qualified name, loads the captured arguments (embedded in the file, with their
SHA-256), calls it, and fails when the original exception is raised again through the
patched function. When the call cannot be made (a function of the script itself, a
nested function, an argument not captured) but the program's argv is known, the test
runs the program instead (with the overlays when it runs under boot). A capture that
allows neither gives a test that skips and says why.

**Proof** (:func:`prove`, ``codesuture repro --prove``): each test runs twice in a
subprocess: plain (``python -m pytest FILE``: must fail with the original exception)
and under boot with the store (``python -m codesuture.boot --overlays STORE --no-heal
--require-overlays -m pytest FILE``: must pass). The result (test SHA-256, both
outcomes, interpreter, the overlay's SHA-256) is written into the patch record's
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
import types
from dataclasses import dataclass
from typing import Any, Sequence

from codesuture.errors import CodeSutureError, FileError, OverlayError
from codesuture.logs import logger

log = logger("codesuture.repro")

#: Folder suffix of an overlay's captures (``<stem>.repro``).
REPRO_SUFFIX = ".repro"
#: Descriptor format.
FORMAT = 1
#: Caps when reading captures back (the setting may raise the capture cap; reading stays bounded).
MAX_DESCRIPTOR_BYTES = 1024 * 1024
MAX_ARGS_BYTES = 16 * 1024 * 1024
#: The environment variable a repro test writes its outcome to (JSON), when set.
RESULT_ENV = "CODESUTURE_REPRO_RESULT"
_REPR_CHARS = 200
_CO_VARARGS, _CO_VARKEYWORDS = 0x04, 0x08
_CO_GENERATOR, _CO_COROUTINE, _CO_ITERABLE_COROUTINE, _CO_ASYNC_GENERATOR = 0x20, 0x80, 0x100, 0x200
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


# --------------------------------------------------------------------------- capture


@dataclass(frozen=True)
class CaptureOptions:
    enabled: bool
    max_bytes: int
    redact: tuple[str, ...]


_OPTIONS: dict[tuple[str | None, ...], CaptureOptions] = {}


def options(environ: Any = None) -> CaptureOptions:
    """The capture settings (``repro``, ``repro_max_bytes``, ``repro_redact``) from
    :mod:`codesuture.settings` (boot exports them to the environment); cached per
    value of the variables. Invalid settings turn capture off (logged once)."""
    from codesuture import settings

    env = os.environ if environ is None else environ
    key = tuple(env.get(n) for n in ("CODESUTURE_MODE", "CODESUTURE_REPRO", "CODESUTURE_REPRO_MAX_BYTES",
                                      "CODESUTURE_REPRO_REDACT", "CODESUTURE_KEYS", "CODESUTURE_OVERLAYS",
                                      "CODESUTURE_CONFIG"))
    found = _OPTIONS.get(key)
    if found is None:
        try:
            s = settings.load(environ=env)
            found = CaptureOptions(bool(s.repro), int(s.repro_max_bytes), tuple(s.repro_redact))
        except CodeSutureError as exc:
            log.warning("no repro captures: %s", exc)
            found = CaptureOptions(False, 0, ())
        _OPTIONS[key] = found
    return found


def site_name(qualname: str, firstlineno: int, offset: int) -> str:
    """``<qualname>.<firstlineno>.<offset>`` with anything but ``[A-Za-z0-9_.-]`` as ``_``."""
    return f"{_SAFE.sub('_', qualname)}.{int(firstlineno)}.{int(offset)}"


def redacted(name: str, patterns: Sequence[str]) -> bool:
    """Whether parameter (or option) *name* matches one of *patterns* (fnmatch,
    case-insensitive)."""
    import fnmatch

    low = name.lower()
    return any(fnmatch.fnmatchcase(low, p.lower()) for p in patterns)


def redact_argv(argv: Sequence[str], patterns: Sequence[str]) -> tuple[list[str], bool]:
    """*argv* with the values of options named like *patterns* replaced by
    ``<redacted>`` (``--api-key=X``, ``--api-key X``, ``--password``...); and whether
    anything was replaced."""
    out: list[str] = []
    hide_next = changed = False
    for arg in argv:
        if hide_next:
            out.append("<redacted>")
            hide_next, changed = False, True
            continue
        if arg.startswith("-") and len(arg) > 1 and arg != "--":
            name, eq, _ = arg.lstrip("-").partition("=")
            if redacted(name, patterns) or redacted(name.replace("-", "_"), patterns):
                if eq:
                    out.append(arg.split("=", 1)[0] + "=<redacted>")
                    changed = True
                else:
                    out.append(arg)
                    hide_next = True
                continue
        out.append(arg)
    return out, changed


class _TooLarge(Exception):
    pass


class _Capped:
    """A file for :class:`pickle.Pickler` that refuses to grow beyond *cap* bytes."""

    def __init__(self, cap: int) -> None:
        self.cap, self.size, self.parts = cap, 0, []  # type: ignore[var-annotated]

    def write(self, data: Any) -> int:
        self.size += len(data)
        if self.size > self.cap:
            raise _TooLarge()
        self.parts.append(bytes(data))
        return len(data)


def dumps_capped(value: object, cap: int) -> bytes:
    """``pickle.dumps(value, 4)`` that stops (raising ``_TooLarge``) after *cap* bytes."""
    import pickle

    out = _Capped(cap)
    pickle.Pickler(out, protocol=4).dump(value)
    return b"".join(out.parts)


def _load_problem(data: bytes) -> str | None:
    """Why pickled *data* does not load back, or None. Loading rebuilds the objects as
    :func:`copy.deepcopy` would (their classes' ``__reduce__``/``__setstate__``), in
    this process; a class whose ``__getattr__`` raises something else than
    AttributeError, say, pickles but never loads."""
    import pickle

    try:
        pickle.loads(data)
    except Exception as exc:  # noqa: BLE001 - whatever the classes raise
        return f"{type(exc).__name__}: {str(exc)[:_REPR_CHARS]}"
    return None


def _short_repr(value: object) -> str:
    import copy
    import reprlib

    r = reprlib.Repr()
    r.maxstring = r.maxother = 120
    r.maxlevel = 3
    try:
        shown = copy.deepcopy(value)
        note = ""
    except Exception:  # noqa: BLE001 - anything user code raises
        shown, note = value, " (no deep copy either)"
    try:
        text = r.repr(shown)
    except Exception as exc:  # noqa: BLE001
        text = f"<repr failed: {type(exc).__name__}>"
    return text[:_REPR_CHARS] + note


def _type_name(value: object) -> str:
    t = type(value)
    return f"{t.__module__}.{t.__qualname__}"


def _frame_of(exc: BaseException, code: types.CodeType) -> types.FrameType | None:
    """The innermost traceback frame of *exc* running *code*."""
    tb, found = exc.__traceback__, None
    while tb is not None:
        if tb.tb_frame.f_code is code:
            found = tb.tb_frame
        tb = tb.tb_next
    return found


def parameters(code: types.CodeType) -> list[tuple[str, str]]:
    """``(name, kind)`` of *code*'s parameters in order; kind is ``positional``,
    ``keyword_only``, ``var_positional`` or ``var_keyword``."""
    n_pos, n_kw = code.co_argcount, code.co_kwonlyargcount
    names = code.co_varnames
    out = [(n, "positional") for n in names[:n_pos]]
    out += [(n, "keyword_only") for n in names[n_pos:n_pos + n_kw]]
    i = n_pos + n_kw
    if code.co_flags & _CO_VARARGS:
        out.append((names[i], "var_positional"))
        i += 1
    if code.co_flags & _CO_VARKEYWORDS:
        out.append((names[i], "var_keyword"))
    return out


def code_kind(code: types.CodeType) -> str:
    if code.co_flags & _CO_ASYNC_GENERATOR:
        return "asyncgen"
    if code.co_flags & (_CO_COROUTINE | _CO_ITERABLE_COROUTINE):
        return "coroutine"
    if code.co_flags & _CO_GENERATOR:
        return "generator"
    return "function"


def resolve_qualname(root: object, qualname: str) -> object | None:
    """The object *qualname* names in module *root*, through ``__dict__`` lookups only
    (no descriptors, no ``__getattr__``); staticmethod/classmethod/property unwrapped.
    None when it cannot be reached (``<locals>``, a missing name)."""
    if "<" in qualname:
        return None
    obj: object = root
    for part in qualname.split("."):
        d = getattr(obj, "__dict__", None)
        if not isinstance(d, (dict, types.MappingProxyType)) or part not in d:
            return None
        obj = d[part]
    if isinstance(obj, (staticmethod, classmethod)):
        obj = obj.__func__
    if isinstance(obj, property):
        obj = obj.fget
    return obj


def _callable_by_name(module: str, qualname: str, firstlineno: int) -> bool:
    """Whether ``module.qualname`` is a function (or a wrapper of one) whose code is
    the patched function's, so a test can call it by name."""
    mod = sys.modules.get(module)
    obj = resolve_qualname(mod, qualname) if mod is not None else None
    for _ in range(16):
        if obj is None:
            return False
        code = getattr(obj, "__code__", None)
        if isinstance(code, types.CodeType) and code.co_qualname == qualname and code.co_firstlineno == firstlineno:
            return True
        obj = getattr(obj, "__wrapped__", None)
    return False


def _import_root(module: str, filename: str) -> str | None:
    """The ``sys.path`` folder *module* (at *filename*) was imported from."""
    parts = module.split(".")
    path = os.path.abspath(filename)
    base = os.path.splitext(os.path.basename(path))[0]
    d = os.path.dirname(path)
    if base == "__init__":
        parts = parts + ["__init__"]
    if base != parts[-1]:
        return None
    for _ in parts[:-1]:
        d = os.path.dirname(d)
    return d


def _rel(path: str, store_dir: str) -> str:
    return os.path.relpath(os.path.realpath(path), os.path.realpath(store_dir)).replace(os.sep, "/")


def _distributions(filenames: Sequence[str]) -> dict[str, str]:
    """Distribution name -> version of the installed distributions owning *filenames*
    (see :func:`codesuture.overlay.package.owner`: their RECORD, else
    ``importlib.metadata``); files no distribution owns are left out."""
    from codesuture.overlay.package import owner

    out: dict[str, str] = {}
    for f in filenames:
        found = owner(f) if f else None
        if found:
            out[found["name"]] = found["version"]
    return out


def _program(patterns: Sequence[str], store_dir: str) -> dict[str, Any] | None:
    """How the program was started (script or ``-m`` module, argv, working folder)."""
    main = sys.modules.get("__main__")
    if main is None:
        return None
    spec = getattr(main, "__spec__", None)
    argv, changed = redact_argv(list(sys.argv[1:]), patterns)
    import threading

    info: dict[str, Any] = {"argv": argv, "argv_redacted": changed, "cwd": _rel(os.getcwd(), store_dir),
                            "main_thread": threading.current_thread() is threading.main_thread()}
    name = getattr(spec, "name", None)
    file = getattr(main, "__file__", None)
    if name and name != "__main__":
        info.update(kind="module", name=name[: -len(".__main__")] if name.endswith(".__main__") else name)
    elif isinstance(file, str) and file:
        path = os.path.dirname(file) if name == "__main__" else file  # a folder or zip app runs as itself
        info.update(kind="script", path=_rel(path, store_dir))
    else:
        return None  # python -c, an interactive session, a host that embeds Python
    return info


def capture(exc: BaseException, code: types.CodeType, record: Any, module: str, filename: str,
            overlay: str) -> str | None:
    """Capture what reproduces the crash *exc* of the function running *code* (patched
    as *record*, in *module* from *filename*) beside *overlay*; returns the descriptor
    path, or None (capture off, nothing to capture, or it failed: logged). Never raises."""
    try:
        opts = options()
        if not opts.enabled:
            return None
        return _capture(exc, code, record, module, filename, overlay, opts)
    except Exception as err:  # noqa: BLE001 - contained (design rule 7)
        log.warning("no repro captured for %s: %r", getattr(record, "qualname", "?"), err)
        return None


def _capture(exc: BaseException, code: types.CodeType, record: Any, module: str, filename: str, overlay: str,
             opts: CaptureOptions) -> str | None:
    import stat

    from codesuture.overlay.model import interpreter_info
    from codesuture.overlay.names import OVERLAY_SUFFIX, parse_stem, site_dirs
    from codesuture.util.clock import iso_utc
    from codesuture.util.files import atomic_write, locked

    store_dir = os.path.dirname(os.path.abspath(overlay))
    stem = os.path.basename(overlay)[: -len(OVERLAY_SUFFIX)]
    parsed = parse_stem(stem)
    if parsed is None:
        return None
    frame = _frame_of(exc, code)
    params: list[dict[str, Any]] = []
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    values: list[tuple[dict[str, Any], object]] = []
    script = module == "__main__"
    if frame is not None and not script:
        f_locals = frame.f_locals
        for name, kind in parameters(code):
            p: dict[str, Any] = {"name": name, "kind": kind}
            params.append(p)
            if redacted(name, opts.redact):
                p["status"] = "redacted"
                continue
            if name not in f_locals:
                p.update(status="not capturable", reason="deleted before the crash")
                continue
            value = f_locals[name]
            p["type"] = _type_name(value)
            if kind == "var_keyword" and isinstance(value, dict):
                hidden = sorted(str(k) for k in value if redacted(str(k), opts.redact))
                if hidden:
                    p.update(status="redacted", keys=hidden)
                    continue
            values.append((p, value))
            if kind == "positional":
                args.append(value)
            elif kind == "var_positional":
                args.extend(value)
            elif kind == "keyword_only":
                kwargs[name] = value
            else:
                kwargs.update(value)
    data = b""
    if frame is not None and not script:
        complete = len(values) == len(params)
        if complete:
            try:
                data = dumps_capped({"args": args, "kwargs": kwargs}, opts.max_bytes)
            except _TooLarge:
                data = b""
            except Exception:  # noqa: BLE001 - found per parameter below
                data = b""
            if b"__main__" in data or _load_problem(data):
                data = b""
        if data:
            for p, _ in values:
                p["status"] = "captured"
        else:
            _classify(values, opts.max_bytes)
    program = _program(opts.redact, store_dir)
    files = sorted({filename, *(getattr(sys.modules.get(type(v).__module__), "__file__", "") or "" for _, v in values)})
    desc: dict[str, Any] = {
        "format": FORMAT,
        "module": module,
        "key": parsed[0],
        "stem": stem,
        "qualname": record.qualname,
        "firstlineno": record.firstlineno,
        "offset": record.offset,
        "line": record.line,
        "exception": record.exception.split(":", 1)[0],
        "exception_type": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "kind": code_kind(code),
        "callable": (not script) and _callable_by_name(module, record.qualname, record.firstlineno),
        "parameters": params,
        "arguments": None,
        "program": program,
        "paths": [],
        "interpreter": {**interpreter_info(), "platform": sys.platform},
        "distributions": _distributions(files),
        "capturedAt": iso_utc(time.time()),
        "limits": {"max_bytes": opts.max_bytes, "redact": list(opts.redact)},
    }
    if frame is None:
        desc["missing"] = "the patched function's frame is not in the traceback"
    root = None if script else _import_root(module, filename)
    if root is not None and os.path.realpath(root) not in site_dirs():  # an app module: the test needs its folder
        desc["paths"] = [_rel(root, store_dir)]
    name = site_name(record.qualname, record.firstlineno, record.offset)
    rdir = os.path.join(store_dir, stem + REPRO_SUFFIX)
    with locked(os.path.join(store_dir, f".{parsed[0]}.lock")):
        try:
            st = os.lstat(rdir)
        except FileNotFoundError:
            os.mkdir(rdir, 0o700)
        else:
            if not stat.S_ISDIR(st.st_mode):
                raise OverlayError(rdir, "is not a folder: no repro captured")
        pkl = os.path.join(rdir, name + ".pkl")
        if data:
            atomic_write(pkl, data, mode=0o600)
            desc["arguments"] = {"file": name + ".pkl", "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        elif os.path.lexists(pkl):
            os.unlink(pkl)
        out = atomic_write(os.path.join(rdir, name + ".json"),
                           (json.dumps(desc, indent=2, sort_keys=True) + "\n").encode(), mode=0o600)
    log.info("repro captured for %s: %s", record.qualname, out)
    return out


def _classify(values: list[tuple[dict[str, Any], object]], cap: int) -> None:
    """Status of each parameter when the arguments could not be captured together."""
    total = 0
    for p, value in values:
        try:
            one = dumps_capped(value, cap)
        except _TooLarge:
            p.update(status="too large", reason=f"over {cap} bytes pickled (repro_max_bytes)")
            continue
        except Exception as exc:  # noqa: BLE001 - what pickle (or the value's __reduce__) raised
            p.update(status="not capturable", reason=f"{type(exc).__name__}: {str(exc)[:_REPR_CHARS]}",
                     repr=_short_repr(value))
            continue
        if b"__main__" in one:
            p.update(status="not capturable", reason="refers to definitions of the script itself (__main__)",
                     repr=_short_repr(value))
            continue
        problem = _load_problem(one)
        if problem:
            p.update(status="not capturable", reason=f"pickles, but does not load back ({problem})",
                     repr=_short_repr(value))
            continue
        total += len(one)
        p["status"] = "captured" if total <= cap else "too large"
        if total > cap:
            p["reason"] = f"the arguments together are over {cap} bytes pickled (repro_max_bytes)"


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
    """Run every test plain (must fail with the original exception) and under boot with
    its store (must pass); record each outcome as ``evidence["proof"]`` of its patch in
    the sidecar (*record*). When the plain run stops earlier, at another patched site
    of the same overlay (a function with several patches), the "without" run is redone
    under boot with the store minus this patch (:func:`store_without`) and must fail
    with the original exception there; the outcome says so. *app_root*: where ``app:``
    origins are (for that rebuild)."""
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
            rc, result, out = _run_one([py, *pytest_args], test, os.path.join(tmp, "without.json"), timeout)
            without = _outcome(rc, result, out)
            ok_without = result is not None and result.get("outcome") == "original" and rc != 0
            if (not ok_without and result is not None and result.get("outcome") == "other"
                    and len(t.capture.meta.patches) > 1):
                try:
                    minus = store_without(t.capture, os.path.join(tmp, "minus"), py, app_root)
                except CodeSutureError as exc:
                    without += f"; without this patch alone: cannot rebuild ({getattr(exc, 'reason', exc)})"
                else:
                    rc2, result2, out2 = _run_one([*boot_command(py, minus, None), *pytest_args], test,
                                                  os.path.join(tmp, "minus.json"), timeout)
                    ok_without = result2 is not None and result2.get("outcome") == "original" and rc2 != 0
                    without = f"{_outcome(rc2, result2, out2)} with the store minus this patch (plain: {without})"
            rc, result, out = _run_one([*boot_command(py, t.capture.store, keys), *pytest_args], test,
                                       os.path.join(tmp, "with.json"), timeout)
            with_ = _outcome(rc, result, out)
            ok_with = result is not None and result.get("outcome") == "returned" and rc == 0
        passed = ok_without and ok_with
        data = read_regular(os.path.join(t.capture.store, t.capture.stem + OVERLAY_SUFFIX), MAX_OVERLAY_BYTES)
        evidence = {
            "test": os.path.basename(t.path), "test_sha256": t.sha256, "by": t.by,
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


__all__ = ["capture", "options", "read_captures", "write_tests", "render", "prove", "record_evidence", "Capture",
           "Missing", "ReproTest", "Proof", "REPRO_SUFFIX", "site_name", "redact_argv", "redacted", "dumps_capped",
           "child_env", "boot_command"]
