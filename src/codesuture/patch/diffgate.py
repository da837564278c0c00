"""Semantic diff gate: a per-guard budget of changed instructions.

A guard only ever adds a check and a fallback around one operation; a synthesis that
adds more than its budget (or removes any original instruction) is refused, so a bug
in synthesis cannot ship a rewrite of the function.
"""

from __future__ import annotations

from codesuture.errors import PatchError
from codesuture.patch.spec import GuardSpec

#: Instructions of the slow-path report every guard makes when it fires
#: (codesuture.guards.base.hook: 8 on 3.11, 7 after).
HOOK = 8
#: Maximum instructions a guard may add (labels and exception-table markers do not
#: count), its slow-path report included.
BUDGET = {
    "null_guard": 9 + HOOK,
    "key_guard": 10 + HOOK,
    "subscript_guard": 8 + HOOK,
    "index_guard": 20 + HOOK,
    "list_bound_guard": 20 + HOOK,
    "division_guard": 10 + HOOK,
    "str_coerce_guard": 18 + HOOK,
    "callable_guard": 8 + HOOK,
    "type_coercion_guard": 20 + HOOK,
    "file_guard": 26 + HOOK,
}
#: Per extra link of a chain_subscript_guard (a None check on the next subscript, and its report).
CHAIN_LINK = 8 + HOOK


def budget(spec: GuardSpec) -> int:
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
