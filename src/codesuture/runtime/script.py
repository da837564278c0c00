"""The script boundary: run a script (or ``-m`` module) as ``__main__`` the way
``python script.py`` does, heal unhandled structural crashes, and replay the run.

As with ``python script.py``: the script's directory is ``sys.path[0]``, the
arguments reach ``sys.argv``, the exit code is the script's (an unhandled exception
prints its traceback through ``sys.excepthook`` and exits 1). A replay re-runs the
whole script in a fresh ``__main__`` namespace with the patched code; modules already
imported stay imported (their functions were patched in place).
"""

from __future__ import annotations

import builtins
import os
import sys
import types

_PKG_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Target:
    """What runs as ``__main__``: its source path, module spec (for ``-m``) and argv."""

    __slots__ = ("path", "argv", "spec")

    def __init__(self, path: str, argv: list[str], spec: Any = None) -> None:
        self.path, self.argv, self.spec = path, argv, spec


def script_target(path: str, args: list[str]) -> Target:
    return Target(os.path.abspath(path), [path, *args])


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


def _trim(tb: types.TracebackType | None) -> types.TracebackType | None:
    """Drop CodeSuture's own frames from the head of a traceback, as Python's runner
    shows only the script's frames."""
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_PKG_DIR + os.sep):
        tb = tb.tb_next
    return tb


def report(exc: BaseException) -> None:
    """Print an unhandled exception as the interpreter would."""
    tb = _trim(exc.__traceback__)
    sys.excepthook(type(exc), exc.with_traceback(tb), tb)


def main_code_for(target: Target, entries: Any, policy: Any) -> types.CodeType:
    """The script's module code: its admitted overlay when one applies, else the
    compiled source. Raises OSError when the script cannot be read, SyntaxError as
    Python would."""
    from codesuture.overlay.index import script_key

    with open(target.path, "rb") as fh:
        source = fh.read()
    if entries is not None:
        key = script_key(target.path)
        mine = entries.get(key)
        if mine:
            from codesuture.loader.resolve import resolve

            found = resolve(key, mine, source, target.path, policy)
            if found is not None:
                return found.code
    return compile(source, target.path, "exec", dont_inherit=True)


def run(
    target: Target,
    *,
    heal: Callable[[BaseException, types.CodeType, str], Any] | None = None,
    retries: int = 3,
    entries: Any = None,
    policy: Any = None,
) -> int:
    """Run *target* as ``__main__``; with *heal*, heal and replay up to *retries*
    times. Returns the exit code."""
    sys.argv[:] = target.argv
    script_dir = os.path.dirname(os.path.abspath(target.path))
    if target.spec is None:
        if sys.path and sys.path[0] in ("", os.getcwd()):
            sys.path[0] = script_dir
        else:
            sys.path.insert(0, script_dir)
    code = main_code_for(target, entries, policy)
    attempt = 0
    while True:
        module = types.ModuleType("__main__")
        module.__dict__.update(
            __file__=target.path,
            __builtins__=builtins,
            __spec__=target.spec,
            __loader__=getattr(target.spec, "loader", None),
            __package__=target.spec.parent if target.spec is not None else None,
            __cached__=None,
        )
        sys.modules["__main__"] = module
        try:
            exec(code, module.__dict__)
            return 0
        except SystemExit as exc:
            return _exit_code(exc)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - the boundary: every crash reaches it
            result = heal(exc, code, target.path) if heal is not None and attempt < retries else None
            if result is None:
                report(exc)
                return 1
            attempt += 1
            if result.main_code is not None:
                code = result.main_code
            from codesuture.logs import logger

            logger("codesuture.run").warning("replaying %s (attempt %d of %d)", os.path.basename(target.path), attempt, retries)
            del exc


__all__ = ["Target", "script_target", "module_target", "run", "report", "main_code_for"]
