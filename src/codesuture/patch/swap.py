"""Live swap: put a patched code object in place of the old one everywhere it lives.

* every function whose ``__code__`` is the old code object gets the new one, in place,
  so bound methods, ``functools.partial``, ``__wrapped__`` chains, staticmethod and
  classmethod wrappers and decorators that hold the function all see it;
* every function whose code *contains* the old code (an outer function creating
  closures, lambdas or 3.11 comprehensions) gets a copy with rebuilt ``co_consts``,
  so functions created later are patched too.

Functions using the old code are found with ``gc.get_referrers`` (a C-level pass).
Code objects are not tracked by the garbage collector, so parents cannot be found
from ``co_consts`` referrers; they are found from the function objects, with one
``gc.get_objects()`` pass, and only when a live parent can exist: when the code is
nested in a function (``<locals>`` in its qualified name). Methods and module-level
functions and lambdas have only a class or module body as parent, which is not live.
Frames already running the old code finish with it. Rollback is a swap back to the
original code.
"""

from __future__ import annotations

import gc
import types
from dataclasses import dataclass, field
from typing import Sequence

from codesuture.errors import PatchError
from codesuture.patch.synthesize import replace_in_tree, walk_code


@dataclass
class SwapReport:
    """What a swap changed: functions updated in place, and old -> new code objects."""

    functions: int = 0
    parents: int = 0
    replaced: dict[types.CodeType, types.CodeType] = field(default_factory=dict)


def check_compatible(old: types.CodeType, new: types.CodeType) -> None:
    """Raise :class:`PatchError` when *new* cannot stand in for *old* in live
    functions (free or cell variables differ, so closures would not line up)."""
    if old.co_freevars != new.co_freevars or old.co_cellvars != new.co_cellvars:
        raise PatchError(f"free variables of {old.co_qualname} differ after patching; refusing to swap")


def swap(olds: Sequence[types.CodeType] | types.CodeType, new: types.CodeType) -> SwapReport:
    """Replace every code object in *olds* (a function's original code and the patched
    versions it had in this process) with *new*, in every live function and parent
    function. One ``gc.get_referrers`` pass for all of them, one ``gc.get_objects``
    pass only when the code is nested in a function. Raises :class:`PatchError` when
    *new* cannot stand in for one of them (nothing is changed then)."""
    olds = [olds] if isinstance(olds, types.CodeType) else [o for o in olds if o is not new]
    for old in olds:
        check_compatible(old, new)
    report = SwapReport()
    if not olds:
        return report
    targets = {id(o): o for o in olds}
    for old in olds:
        report.replaced[old] = new
    for obj in gc.get_referrers(*olds):
        if type(obj) is types.FunctionType and id(obj.__code__) in targets:
            obj.__code__ = new
            report.functions += 1
    if not any("<locals>" in o.co_qualname for o in olds):
        return report
    filename = new.co_filename
    for obj in gc.get_objects():
        if type(obj) is not types.FunctionType:
            continue
        code = obj.__code__
        if code.co_filename != filename or code is new:
            continue
        parent = report.replaced.get(code)
        if parent is None:
            parent = code
            for old in olds:
                if any(c is old for c in walk_code(parent)):
                    parent = replace_in_tree(parent, old, new)
            if parent is code:
                continue
            report.replaced[code] = parent
        obj.__code__ = parent
        report.parents += 1
    return report
