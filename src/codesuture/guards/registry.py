"""Guard name -> synthesizer, for :mod:`codesuture.patch.synthesize`."""

from __future__ import annotations

from typing import Any, Callable

from codesuture.guards import arith, calls, null, subscript
from codesuture.guards.base import Rewrite
from codesuture.patch.spec import AS_IS, CALLER_RULE


def registry() -> dict[str, Callable[[list[Any], int, Any, Any], Rewrite]]:
    """Guard name -> synthesizer ``(instrs, index, spec, firing) -> Rewrite``; *firing*
    (:class:`~codesuture.guards.base.Firing`) is what the guard reports when it fires."""
    return {
        "null_guard": null.synthesize,
        "key_guard": subscript.key_guard,
        "subscript_guard": subscript.subscript_guard,
        "chain_subscript_guard": subscript.chain_subscript_guard,
        "index_guard": subscript.index_guard,
        "list_bound_guard": subscript.index_guard,
        "division_guard": arith.division_guard,
        "str_coerce_guard": arith.str_coerce_guard,
        "callable_guard": calls.callable_guard,
        "type_coercion_guard": calls.type_coercion_guard,
        "file_guard": calls.file_guard,
        "call_guard": calls.call_guard,
    }


_CONTAINER_GUARDS = frozenset({"key_guard", "index_guard", "list_bound_guard", "chain_subscript_guard"})


def default_rule(spec: Any) -> str:
    """Which evidence decides the value a guard of *spec* (a
    :class:`~codesuture.patch.spec.GuardSpec`) yields when it fires, as recorded in the
    patch metadata (``evidence.default``) and shown by ``explain``; the table of
    ``docs/guards.md``. One of ``consumer``, ``container elements``, ``other operand``,
    ``method name`` (``None.<m>()`` answers as the empty value of the type that has
    ``m``), ``fixed`` (the guard's one value: a stand-in file, a coercion) or
    ``none known``; for a value returned unchanged (``GuardSpec.flow`` with
    :data:`~codesuture.patch.spec.AS_IS`), ``caller's consumer`` first
    (``"caller's consumer, then container elements"``)."""
    if spec.guard in ("file_guard", "str_coerce_guard", "type_coercion_guard", "callable_guard"):
        return "fixed"
    if spec.default != "None":
        return "consumer"
    own = _own_rule(spec)
    if AS_IS in spec.flow and own in _CALLER_FIRST:  # returned unchanged: the caller's consumer first
        return CALLER_RULE if own == "none known" else f"{CALLER_RULE}, then {own}"
    return own


#: Rules that know a type at most (not a value): the consumer of the caller a value
#: is returned to unchanged goes first. "other operand" computes the operation's value
#: itself (``None + 1`` is ``1``), and stays.
_CALLER_FIRST = frozenset({"container elements", "none known"})


def caller_first(spec: Any) -> bool:
    """True when the default of a guard of *spec* is read from the consumer of the
    caller its value is returned to, if it is returned unchanged: its static default
    is None and its own rule knows a type at most (``container elements``,
    ``none known``); a stand-in method, a skipped store and the fixed guards never."""
    return spec.default == "None" and default_rule(spec._replace(flow="")) in _CALLER_FIRST


def _own_rule(spec: Any) -> str:
    if spec.guard in _CONTAINER_GUARDS:
        return "container elements"
    if spec.guard == "null_guard" and spec.form in ("operator", "operand", "compare"):
        return "other operand"
    if spec.guard == "null_guard" and spec.form == "method":
        return "method name"
    if spec.guard == "null_guard" and spec.form == "store":
        return "fixed"  # no value: the store is skipped
    return "none known"


__all__ = ["registry", "default_rule", "caller_first"]
