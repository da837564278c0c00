"""Is the crash the program's own business?

EAFP code (``try: d[k] except KeyError: ...``) expects the exception; patching it
would change the program's meaning. A crash is left alone when any frame of its
traceback sits in the body of a ``try`` whose handler names the exception's class or
one of its specific ancestors (``KeyError``, ``LookupError``). Broad handlers
(bare ``except``, ``Exception``, ``BaseException``) are cleanup, not EAFP: a crash
re-raised through them may still be patched.
"""

from __future__ import annotations

import ast
import linecache
import os
from functools import lru_cache

from codesuture.crash.site import _PKG_DIR, frames, positions_at

_BROAD = {"Exception", "BaseException", "object"}


@lru_cache(maxsize=256)
def _tries(filename: str, mtime: float) -> tuple[tuple[int, int, frozenset[str]], ...]:
    """(first body line, last body line, names caught) of every try in *filename*."""
    source = "".join(linecache.getlines(filename))
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return ()
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Try, ast.TryStar)) and node.body and node.handlers:
            names: set[str] = set()
            for h in node.handlers:
                names |= _handler_names(h.type)
            out.append((node.body[0].lineno, node.body[-1].end_lineno or node.body[-1].lineno, frozenset(names)))
    return tuple(out)


def _handler_names(expr: ast.expr | None) -> set[str]:
    if expr is None:
        return {"BaseException"}
    if isinstance(expr, ast.Tuple):
        return set().union(*(_handler_names(e) for e in expr.elts))
    if isinstance(expr, ast.Name):
        return {expr.id}
    if isinstance(expr, ast.Attribute):
        return {expr.attr}
    return set()


def caught_by_program(exc: BaseException) -> str | None:
    """Where the program catches *exc* itself (``"file:line"``), or None."""
    specific = {c.__name__ for c in type(exc).__mro__} - _BROAD
    for tb in frames(exc.__traceback__):
        filename = tb.tb_frame.f_code.co_filename
        if filename.startswith("<") or os.path.realpath(filename).startswith(_PKG_DIR + os.sep):
            continue
        line = positions_at(tb.tb_frame.f_code, tb.tb_lasti)[0] or tb.tb_lineno
        try:
            mtime = os.stat(filename).st_mtime
        except OSError:
            continue
        for first, last, names in _tries(filename, mtime):
            if first <= line <= last and names & specific:
                return f"{filename}:{line}"
    return None
