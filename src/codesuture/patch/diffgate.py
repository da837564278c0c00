"""Semantic diff gate: a per-guard budget of changed instructions.

A guard only ever adds a check and a fallback around one operation; a synthesis that
adds more than its budget (or removes any original instruction) is refused, so a bug
in synthesis cannot ship a rewrite of the function.
"""

from __future__ import annotations

from codesuture.errors import PatchError
from codesuture.patch.spec import GuardSpec

#: Maximum instructions a guard may add (labels and exception-table markers do not
#: count), its slow path included (the call into codesuture.runtime.events with its
#: evidence: about 14 of them). Measured on 3.11 (the largest, with PRECALL) plus 2.
BUDGET = {
    "null_guard": 24,
    "key_guard": 26,
    "subscript_guard": 23,
    "index_guard": 36,
    "list_bound_guard": 36,
    "division_guard": 25,
    "str_coerce_guard": 27,
    "callable_guard": 17,
    "type_coercion_guard": 23,
    "file_guard": 28,
    "call_guard": 28,
}
#: Per extra link of a chain_subscript_guard (a None check on the next subscript).
CHAIN_LINK = 23
#: Per extra link of an attribute chain (null_guard attr with links > 1).
ATTR_LINK = 22
#: The second operand's check of a null_guard compare (both operands are checked).
COMPARE_SIDE = 22


def budget(spec: GuardSpec) -> int:
    """The instructions *spec*'s guard may add."""
    if spec.guard == "null_guard" and spec.form == "attr" and spec.links > 1:
        return BUDGET["null_guard"] + ATTR_LINK * (spec.links - 1)
    if spec.guard == "null_guard" and spec.form == "compare":
        return BUDGET["null_guard"] + COMPARE_SIDE
    if spec.guard == "chain_subscript_guard":
        first = {"key": "key_guard", "index": "index_guard", "none": "subscript_guard"}.get(spec.form, "index_guard")
        return BUDGET[first] + CHAIN_LINK * max(spec.links - 1, 0)
    return BUDGET[spec.guard]


def check(spec: GuardSpec, added: int, removed: int) -> None:
    """Raise :class:`PatchError` when the delta is over *spec*'s budget."""
    limit = budget(spec)
    if removed:
        raise PatchError(f"{spec.guard} would remove {removed} original instruction(s); refused")
    if added > limit:
        raise PatchError(f"{spec.guard} adds {added} instructions, over its budget of {limit}; refused")


def render(before: list[str], after: list[str]) -> str:
    """Unified diff of two instruction listings (for ``--verbose``)."""
    import difflib

    return "\n".join(difflib.unified_diff(before, after, "before", "after", lineterm="", n=2))
