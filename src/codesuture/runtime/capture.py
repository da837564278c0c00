"""Repro capture at heal time: what reproduces a crash, beside the overlay it patched.

Called by the healer (:func:`capture`) after a new patch was written; slow path only,
never raises. From the traceback's frame of the patched function it takes the call:
module, qualified name, and the values of its parameters in order (``*args``/``**kwargs``
included) as they were when it crashed, pickled together (protocol 4) through a writer
that stops at ``repro_max_bytes`` (default 64 KiB), so a huge argument costs at most that
much work. A parameter whose name matches one of the ``repro_redact`` patterns
(``*password*``, ``*token*``, ``*secret*``, ``*key*``, ...; case-insensitive; for
``**kwargs`` each key) is never captured; a value pickle refuses (a lock, a socket, a
lambda, an instance of a class defined in the script), or whose pickle does not load
back (checked once, in process), is recorded as *not capturable* with a short ``repr``
of a deep copy. Also recorded: the interpreter, the distributions involved (the one
owning the patched module and those owning the arguments' types, from their
``RECORD``/metadata) and, for a program run from a script or ``-m``, its argv (options
named like a redaction pattern have their value replaced) and working directory. Files
(mode 0600, folder 0700), beside the overlay and never inside it::

    <store>/<stem>.repro/<qualname>.<firstlineno>.<offset>.json   the descriptor
    <store>/<stem>.repro/<qualname>.<firstlineno>.<offset>.pkl    the arguments (only when every one was captured)

The loader never looks at them (the store index only takes ``*.overlay`` names), a
signed set never pins them, a bundle never carries them. Paths inside a descriptor are
relative to the store folder. Capture is off unless ``repro`` is set
(``CODESUTURE_REPRO=1`` or ``repro = true`` in the config): arguments are users' data,
and by default a heal writes no data values anywhere (exception messages are redacted
too unless ``--record-messages``).

The review side (reading captures back, repro tests, their proof) is
:mod:`codesuture.review.repro`.
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

from codesuture.errors import CodeSutureError, OverlayError
from codesuture.logs import logger

log = logger("codesuture.repro")

#: Folder suffix of an overlay's captures (``<stem>.repro``).
REPRO_SUFFIX = ".repro"
#: Descriptor format.
FORMAT = 1
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


__all__ = ["capture", "options", "CaptureOptions", "REPRO_SUFFIX", "FORMAT", "site_name", "redact_argv", "redacted",
           "dumps_capped", "parameters", "code_kind", "resolve_qualname"]
