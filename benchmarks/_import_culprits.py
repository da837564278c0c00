"""Launcher that records which CodeSuture code imports each module.

    python _import_culprits.py OUT.json -m codesuture.boot [boot args...]

Runs the module like ``python -m`` would, with an audit hook on the ``import`` event
(raised once per module actually loaded). For every newly loaded module it stores the
innermost CodeSuture frame on the stack (``module:function:line``), or ``-`` when no
CodeSuture code is involved; written to OUT.json at exit. Used by startup.py and
signed_overlays.py to name the culprit of imports that ``-X importtime`` shows at the
top level (imports done inside functions at run time).
"""

import atexit
import json
import os
import runpy
import sys

_out, _args = sys.argv[1], sys.argv[2:]
_found: dict = {}
_PKG = os.sep + "codesuture" + os.sep


def _where() -> str:
    f = sys._getframe(2)
    while f is not None:
        fn = f.f_code.co_filename
        if _PKG in fn and "benchmarks" not in fn:
            mod = fn[fn.rindex(_PKG) + 1:].removesuffix(".py").replace(os.sep, ".")
            return f"{mod}:{f.f_code.co_qualname}:{f.f_lineno}"
        f = f.f_back
    return "-"


def _hook(event: str, args: tuple) -> None:
    if event == "import" and args[0] not in _found:
        _found[args[0]] = _where()


def _dump() -> None:
    with open(_out, "w") as fh:
        json.dump(_found, fh)


atexit.register(_dump)
sys.addaudithook(_hook)
if _args[0] != "-m":
    raise SystemExit("usage: _import_culprits.py OUT.json -m MODULE [args...]")
sys.argv = [_args[1], *_args[2:]]
runpy.run_module(_args[1], run_name="__main__", alter_sys=True)
