"""Guard name -> synthesizer, for :mod:`codesuture.patch.synthesize`."""

from __future__ import annotations

from typing import Any, Callable

from codesuture.guards import arith, calls, null, subscript
from codesuture.guards.base import Rewrite


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
    ``none known``."""
    if spec.guard in ("file_guard", "str_coerce_guard", "type_coercion_guard", "callable_guard"):
        return "fixed"
    if spec.default != "None":
        return "consumer"
    if spec.guard in _CONTAINER_GUARDS:
        return "container elements"
    if spec.guard == "null_guard" and spec.form in ("operator", "operand", "compare"):
        return "other operand"
    if spec.guard == "null_guard" and spec.form == "method":
        return "method name"
    if spec.guard == "null_guard" and spec.form == "store":
        return "fixed"  # no value: the store is skipped
    return "none known"


__all__ = ["registry", "default_rule"]
