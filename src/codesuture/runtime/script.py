"""The script boundary: run a script (or ``-m`` module) as ``__main__`` the way
``python script.py`` does, heal unhandled structural crashes, and replay the run.

As with ``python script.py``: the script's directory is ``sys.path[0]``, the
arguments reach ``sys.argv``, the exit code is the script's (an unhandled exception
prints its traceback through ``sys.excepthook`` and exits 1). A replay runs the whole
command again in a fresh process (:mod:`codesuture.runtime.rerun`), which loads the
patch from the overlay store; it happens only for a run without side effects before
its crash (:mod:`codesuture.runtime.effects`), unless ``--replay`` says otherwise.
"""

import builtins
import os
import sys
import types

TYPE_CHECKING = False  # and no `from __future__` import: one module less to load on every start
if TYPE_CHECKING:  # pragma: no cover - typing costs milliseconds on the boot path
    from typing import Any, Callable

_PKG_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: :data:`codesuture.runtime.rerun.STATE_ENV` and :data:`codesuture.runtime.effects.REPORT_ENV`
#: (neither module is imported on a start that cannot replay; a test checks they agree).
_REPLAY_STATE_ENV = "CODESUTURE_REPLAY_STATE"
_EFFECTS_REPORT_ENV = "CODESUTURE_EFFECTS_REPORT"


class Target:
    """What runs as ``__main__``: its source path (``<string>`` for ``-c``), argv, module
    spec (``-m``, a folder or zip app), ``path0`` (what ``sys.path[0]`` becomes, as
    Python sets it for that form; None: left as it is) and ``source`` (the code of
    ``-c``; None: read from the path or the spec's loader)."""

    __slots__ = ("path", "argv", "spec", "path0", "source")

    def __init__(self, path: str, argv: "list[str]", spec: "Any" = None, path0: "str | None" = None,
                 source: "bytes | None" = None) -> None:
        self.path, self.argv, self.spec, self.path0, self.source = path, argv, spec, path0, source

    @property
    def on_disk(self) -> bool:
        """True when the code is a file of its own (a script, an ``-m`` module)."""
        return self.source is None and os.path.isfile(self.path)

    def read(self) -> bytes:
        """The source bytes to run. Raises OSError when they cannot be read."""
        if self.source is not None:
            return self.source
        loader = getattr(self.spec, "loader", None)
        if loader is not None and not os.path.isfile(self.path) and hasattr(loader, "get_data"):
            data: bytes = loader.get_data(self.path)  # a zip app's __main__.py
            return data
        with open(self.path, "rb") as fh:
            return fh.read()


def script_target(path: str, args: list[str]) -> Target:
    """``python script.py``; also a folder or a zip file holding ``__main__.py``
    (``python app/``, ``python app.zip``): its ``__main__`` runs with the folder or zip
    first on ``sys.path``. Raises ImportError when a folder or zip has no ``__main__``."""
    full = os.path.abspath(path)
    if os.path.isdir(full) or (os.path.isfile(full) and _is_zip(full)):
        from importlib.machinery import PathFinder

        spec = PathFinder.find_spec("__main__", [full])
        if spec is None or spec.origin is None:
            raise ImportError(f"can't find '__main__' module in {full!r}")
        return Target(spec.origin, [path, *args], spec, path0=full)
    return Target(full, [path, *args], path0=os.path.dirname(full))


def code_target(code: str, args: list[str]) -> Target:
    """``python -c CODE``: ``sys.argv[0]`` is ``-c``, the current folder first on ``sys.path``."""
    return Target("<string>", ["-c", *args], path0="", source=code.encode("utf-8"))


def _is_zip(path: str) -> bool:
    """Whether *path* is a zip archive, as Python decides for ``python app.zip``: with
    the frozen ``zipimport`` (already loaded at start-up; :mod:`zipfile` would cost
    milliseconds on every boot)."""
    import zipimport

    try:
        zipimport.zipimporter(path)
    except (zipimport.ZipImportError, OSError):
        return False
    return True


def module_target(name: str, args: list[str]) -> Target:
    """Resolve ``-m name`` like runpy: a package runs its ``__main__`` submodule.
    Raises ImportError when the module cannot be found or has no source file."""
    import importlib.util

    spec = importlib.util.find_spec(name)
    if spec is None:
        raise ImportError(f"No module named {name}")
    if spec.submodule_search_locations is not None:
        spec = importlib.util.find_spec(name + ".__main__")
        if spec is None:
            raise ImportError(f"No module named {name}.__main__; '{name}' is a package and cannot be directly executed")
    if not spec.origin or not spec.has_location or not spec.origin.endswith(".py"):
        raise ImportError(f"{name} has no Python source file to run")
    return Target(spec.origin, [spec.origin, *args], spec)


def _exit_code(exc: SystemExit) -> int:
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _trim(tb: "types.TracebackType | None") -> "types.TracebackType | None":
    """Drop CodeSuture's own frames from the head of a traceback, as Python's runner
    shows only the script's frames."""
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_PKG_DIR + os.sep):
        tb = tb.tb_next
    return tb


def report(exc: BaseException) -> None:
    """Print an unhandled exception as the interpreter would."""
    tb = _trim(exc.__traceback__)
    sys.excepthook(type(exc), exc.with_traceback(tb), tb)


def main_code_for(target: Target, index: "dict[str, list[Any]] | None", policy: "Any", app_root: str) -> "types.CodeType":
    """The script's module code: its admitted overlay when one applies, else the
    compiled source. Its store key comes from its path relative to *app_root* (see
    :func:`codesuture.overlay.names.script_origin`). Raises OSError when the script
    cannot be read, SyntaxError as Python would. Once the kill switch went off
    (:mod:`codesuture.runtime.killswitch`), always the compiled source."""
    switch = sys.modules.get("codesuture.runtime.killswitch")  # the kill switch wins, always
    if index and target.on_disk and (switch is None or switch.KILLED is None):
        source = target.read()
        from codesuture.overlay.names import main_key, script_origin

        origin = script_origin(target.path, app_root)
        key = main_key(origin)
        mine = index.get(key)
        if mine:
            from codesuture.loader.resolve import resolve

            found = resolve(key, mine, source, target.path, policy)
            if found is not None:
                return found.code
        else:
            _near_miss(index, origin, key)
    try:
        if target.on_disk:
            return _cached_code(target.path)
        return compile(target.read(), target.path, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as exc:  # python's file runner words some of these its own way
        try:
            problem = _undecodable(target.read(), target.path)
        except OSError:
            raise exc from None
        if problem is not None:
            raise problem from None
        raise


def _cached_code(path: str) -> "types.CodeType":
    """The module code of the source file *path*, through the bytecode cache as the
    interpreter is configured (PEP 3147, validated like every imported module's): a
    current ``__pycache__`` entry beside it is used (``python -m compileall``, or the
    script also imported as a module), and one is written only into the
    ``sys.pycache_prefix`` tree (``PYTHONPYCACHEPREFIX``), never beside the script, as
    ``python script.py`` writes nothing there. The builtin :func:`compile` builds the
    ``ast`` module's 100-odd node classes on its first call (``PyAST_Check``), the
    largest part of a start-up's cost; a cached script skips it. ``importlib.machinery``
    is loaded already (``runpy`` imports it). Raises OSError when the file cannot be
    read, SyntaxError as Python would."""
    from importlib.machinery import SourceFileLoader

    class _Loader(SourceFileLoader):
        def set_data(self, path: str, data: "Any", *, _mode: int = 0o666) -> None:
            if sys.pycache_prefix is not None:  # a tree of its own: nothing beside the script
                super().set_data(path, data, _mode=_mode)

    code = _Loader("__main__", path).get_code("__main__")
    if code is None:  # pragma: no cover - a source loader always has code
        raise OSError(f"no code for {path}")
    return code


def _undecodable(source: bytes, path: str) -> "SyntaxError | None":
    """The SyntaxError python's file runner raises for *source* before compiling it (a
    NUL byte; bytes that are not UTF-8 when no PEP 263 coding line is declared), with
    python's own message; None when :func:`compile` will judge it as python does."""
    nul = source.find(b"\0")
    if nul >= 0:
        line = source.count(b"\n", 0, nul) + 1
        start = source.rfind(b"\n", 0, nul) + 1
        text = source[start:nul].decode("utf-8", "replace")
        return SyntaxError("source code cannot contain null bytes", (path, line, None, text))
    head = source.split(b"\n", 2)[:2]
    if any(b"coding" in first for first in head):  # a PEP 263 coding line
        import re

        for first in head:
            found = re.match(rb"^[ \t\f]*#.*?coding[:=][ \t]*([-\w.]+)", first)
            if found:
                name = found.group(1).decode("ascii", "replace")
                if name.lower().replace("_", "-") in ("utf-8", "utf8") or name.lower().startswith("utf-8-"):
                    return None  # compile() reports bad UTF-8 as python does
                try:
                    source.decode(name)
                except (LookupError, UnicodeDecodeError):
                    return SyntaxError(f"encoding problem: {name}")
                return None
            if not first.lstrip().startswith(b"#"):
                break
    try:
        source.decode("utf-8")
    except UnicodeDecodeError as err:
        if source.startswith(b"\xef\xbb\xbf"):
            return None
        line = source.count(b"\n", 0, err.start) + 1
        return SyntaxError(f"Non-UTF-8 code starting with '\\x{source[err.start]:02x}' in file {path} on line {line}, "
                           "but no encoding declared; see https://peps.python.org/pep-0263/ for details")
    return None


def _near_miss(index: "dict[str, list[Any]]", origin: str, key: str) -> None:
    """Log when the store has an overlay for a script of the same name at another path
    relative to the app root (a different app root here, or a moved script)."""
    from codesuture.logs import logger

    log = logger("codesuture.loader")
    log.debug("no overlay for %s (store key %s)", origin, key)
    name = origin.rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    others = [entries[0] for k, entries in index.items() if k.startswith("__main__.")][:16]
    for entry in others:
        try:
            raw = entry.read(".json")
            import json

            other = json.loads(raw)["origin"] if raw else ""
        except Exception:  # noqa: BLE001 - only a hint for a log line
            continue
        if isinstance(other, str) and other != origin and other.rsplit("/", 1)[-1].rsplit(":", 1)[-1] == name:
            log.warning("no overlay for script %s: the store has one for %s (another path relative to the app root; "
                        "the app root here is the nearest folder with pyproject.toml)", origin, other)
            return


def run(
    target: Target,
    *,
    heal: "Callable[[BaseException, types.CodeType, str], Any] | None" = None,
    retries: int = 16,
    index: "dict[str, list[Any]] | None" = None,
    policy: "Any" = None,
    app_root: str | None = None,
    replay: str = "auto",
    ignore: "tuple[str | None, ...]" = (),
    carry: "Callable[[], dict[str, Any]] | None" = None,
    replayable: bool = True,
) -> int:
    """Run *target* as ``__main__``; with *heal*, heal an unhandled crash and replay the
    run while each heal makes progress, at most *retries* times (0: heal, never replay;
    see :mod:`codesuture.runtime.replay`). A replay is this command started again in
    this process (:mod:`codesuture.runtime.rerun`): the script's module code never runs
    twice in one process. *replay*: ``auto`` replays only a run that had no side effect
    before its crash (:mod:`codesuture.runtime.effects`; *ignore*: CodeSuture's own
    paths), ``always``, ``never``; a run healed but not replayed reports the crash as
    Python would, says why in one line, and exits with 1 like the program. *carry*:
    what the command reports at its end so far (``{"patched", "proposed", "lines"}``),
    handed to the replay. *replayable*: False when a replay could load nothing this
    run's heals make (no overlay store: boot without one), so none is prepared: no
    output recording, no audit hook, and :mod:`~codesuture.runtime.effects`,
    :mod:`~codesuture.runtime.rerun` and :mod:`~codesuture.runtime.replay` stay
    unimported until a crash. Returns the exit code: the program's, 1 after an
    unhandled exception, 130 after Ctrl-C."""
    from codesuture.settings import EXIT_INTERRUPTED

    start_cwd = os.getcwd()
    sys.argv[:] = target.argv
    if target.path0 is not None:
        if sys.path and sys.path[0] in ("", os.getcwd()):
            sys.path[0] = target.path0
        else:
            sys.path.insert(0, target.path0)
    try:
        code = main_code_for(target, index, policy, app_root or os.path.dirname(os.path.abspath(target.path)))
    except SyntaxError as exc:  # the program's error, reported as python reports it: no CodeSuture frame
        sys.excepthook(type(exc), exc.with_traceback(None), None)
        return 1
    except OSError as exc:
        python = sys.orig_argv[0] if getattr(sys, "orig_argv", None) else sys.executable  # as python names itself
        print(f"{python}: can't open file {target.path!r}: [Errno {exc.errno}] {exc.strerror}", file=sys.stderr)
        return 2
    replays = None
    may_replay = heal is not None and replayable and replay != "never" and retries > 0
    told = None
    # Only a run that may replay, a replay itself or a run `codesuture watch` asks about
    # pays for the replay machinery before its crash.
    if heal is not None and (may_replay or _REPLAY_STATE_ENV in os.environ or _EFFECTS_REPORT_ENV in os.environ):
        from codesuture.runtime import effects, rerun
        from codesuture.runtime.replay import Replays

        replays = Replays(retries)
        state = rerun.resume()
        if state is not None:
            replays.restore(state)
        may_replay = may_replay and replays.done < retries
        # `codesuture watch` starts the program again itself: it asks what this run did.
        told = os.environ.pop(effects.REPORT_ENV, None)
        if may_replay:
            rerun.record_output()
        if (may_replay or told) and replay == "auto":
            effects.install(ignore)
    module = types.ModuleType("__main__")
    module.__dict__.update(
        __builtins__=builtins,
        __spec__=target.spec,
        __loader__=getattr(target.spec, "loader", None),
        __package__=target.spec.parent if target.spec is not None else None,
        __cached__=None,
    )
    if target.source is None:  # `python -c` code has no __file__
        module.__dict__["__file__"] = target.path
    sys.modules["__main__"] = module
    try:
        exec(code, module.__dict__)
        return 0
    except SystemExit as exc:
        return _exit_code(exc)
    except KeyboardInterrupt as exc:
        report(exc)
        return EXIT_INTERRUPTED
    except BaseException as exc:  # noqa: BLE001 - the boundary: every crash reaches it
        from codesuture.runtime import effects, rerun

        noted = effects.stop()
        output, over = rerun.recorded()
        result = heal(exc, code, target.path) if heal is not None else None
        if told:
            effects.tell(told, "--replay is never" if replay == "never" else effects.describe(noted))
        if result is None:
            report(exc)
            return 1
        why = _not_replayed(result, target, replay, retries, noted, over) if may_replay or retries else None
        if why is None and not replayable:
            why = "a replay is a fresh run, and no overlay store is configured for it to load a patch from"
        if why is None and may_replay and replays is not None and replays.allow(result):
            from codesuture.logs import logger

            logger("codesuture.run").warning("replaying %s (replay %d, at most %d)", os.path.basename(target.path),
                                             replays.done, retries)
            carried = carry() if carry is not None else {}
            try:
                rerun.replay({**replays.state(), "output": output, **carried}, start_cwd)
            except OSError as err:
                why = f"the replay could not start ({err})"
        report(exc)
        if why:
            from codesuture.logs import logger

            if getattr(result, "proposed", False):
                done = "proposed for review"
            elif result.status == "patched" and not result.overlay:
                done = "patched in this process only"
            else:
                done = "healed for the next run"
            logger("codesuture.run").warning("%s; not replayed: %s", done, why)
        return 1


def _not_replayed(result: "Any", target: Target, replay: str, retries: int, noted: "list[str]", over: bool) -> "str | None":
    """Why a healed run is not replayed, or None (see :func:`run`)."""
    if getattr(result, "proposed", False):
        return "a replay is a fresh run, and no run loads a proposal until it is signed"
    if result.status == "patched" and not result.overlay:
        return "a replay is a fresh run, and no overlay was written for it to load"
    if replay == "never":
        return "--replay is never"
    if retries == 0:
        return None  # heal only (codesuture watch starts the program again itself)
    if result.record.module == "__main__" and not target.on_disk:
        return "code that is not a file of its own (-c, a zip app) loads no overlay"
    if replay == "auto" and noted:
        from codesuture.runtime.effects import describe

        return describe(noted)
    if over:
        return "the run wrote more than 1 MiB of output before its crash, which a replay would write again"
    import threading

    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        return "threads the run started are still running"
    return None


__all__ = ["Target", "script_target", "module_target", "code_target", "run", "report", "main_code_for"]
