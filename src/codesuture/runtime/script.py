"""The script boundary: run a script (or ``-m`` module) as ``__main__`` the way
``python script.py`` does, heal unhandled structural crashes, and replay the run.

As with ``python script.py``: the script's directory is ``sys.path[0]``, the
arguments reach ``sys.argv``, the exit code is the script's (an unhandled exception
prints its traceback through ``sys.excepthook`` and exits 1). A replay re-runs the
whole script in a fresh ``__main__`` namespace with the patched code; modules already
imported stay imported (their functions were patched in place).
"""

import builtins
import os
import sys
import types

TYPE_CHECKING = False  # and no `from __future__` import: one module less to load on every start
if TYPE_CHECKING:  # pragma: no cover - typing costs milliseconds on the boot path
    from typing import Any, Callable

_PKG_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
            raise ImportError(f"can't find '__main__' module in {path!r}")
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
    cannot be read, SyntaxError as Python would."""
    if index and target.on_disk:
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
    if target.on_disk:
        return _cached_code(target.path)
    return compile(target.read(), target.path, "exec", dont_inherit=True)


def _cached_code(path: str) -> "types.CodeType":
    """The module code of the source file *path*, through its bytecode cache (PEP 3147:
    ``__pycache__``, or ``sys.pycache_prefix``; written unless ``sys.dont_write_bytecode``),
    as every imported module's: the builtin :func:`compile` would build the ``ast``
    module's 100-odd node classes on every start (``PyAST_Check``), the largest part of
    a start-up's cost. ``importlib.machinery`` is loaded already (``runpy`` imports it).
    Raises OSError when the file cannot be read, SyntaxError as Python would."""
    from importlib.machinery import SourceFileLoader

    code = SourceFileLoader("__main__", path).get_code("__main__")
    if code is None:  # pragma: no cover - a source loader always has code
        raise OSError(f"no code for {path}")
    return code


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
) -> int:
    """Run *target* as ``__main__``; with *heal*, heal every crash and replay the run
    while each heal makes progress, at most *retries* times (0: heal, never replay; see
    :mod:`codesuture.runtime.replay`). Returns the exit code: the program's, 1 after an
    unhandled exception, 130 after Ctrl-C."""
    sys.argv[:] = target.argv
    script_dir = os.path.dirname(os.path.abspath(target.path))
    if target.path0 is not None:
        if sys.path and sys.path[0] in ("", os.getcwd()):
            sys.path[0] = target.path0
        else:
            sys.path.insert(0, target.path0)
    try:
        code = main_code_for(target, index, policy, app_root or script_dir)
    except SyntaxError as exc:  # as python prints it: no traceback of the runner's frames
        sys.excepthook(type(exc), exc.with_traceback(None), None)
        return 1
    replays: "Any" = None  # made on the first crash (runtime/replay.py)
    while True:
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
            from codesuture.settings import EXIT_INTERRUPTED

            report(exc)
            return EXIT_INTERRUPTED
        except BaseException as exc:  # noqa: BLE001 - the boundary: every crash reaches it
            result = heal(exc, code, target.path) if heal is not None else None
            if result is not None and replays is None:
                from codesuture.runtime.replay import Replays

                replays = Replays(retries)
            if result is None or not replays.allow(result):
                report(exc)
                return 1
            if result.main_code is not None:
                code = result.main_code
            from codesuture.logs import logger

            logger("codesuture.run").warning("replaying %s (replay %d, at most %d)", os.path.basename(target.path),
                                             replays.done, retries)
            del exc


__all__ = ["Target", "script_target", "module_target", "code_target", "run", "report", "main_code_for"]
