"""Semantic diff gate: a per-guard budget of changed instructions.

A guard only ever adds a check and a fallback around one operation; a synthesis that
adds more than its budget (or removes any original instruction) is refused, so a bug
in synthesis cannot ship a rewrite of the function.
"""

from __future__ import annotations

from codesuture.errors import PatchError
from codesuture.guards import families
from codesuture.patch.spec import GuardSpec


def budget(spec: GuardSpec) -> int:
    """The instructions *spec*'s guard may add (labels and exception-table markers do
    not count), its slow path included (the call into codesuture.runtime.events with
    its evidence: about 14 of them): the family's budget in the families table, plus
    its per-link budget for each further link of a chain
    (:func:`codesuture.guards.families.budget`). Raises :class:`PatchError` for a
    guard no family has."""
    limit = families.budget(spec)
    if limit is None:
        raise PatchError(f"unknown guard {spec.guard!r}")
    return limit


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
