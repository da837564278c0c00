"""Guard name -> synthesizer, for :mod:`codesuture.patch.synthesize`."""

from __future__ import annotations

from typing import Any, Callable

from codesuture.guards import arith, calls, null, subscript
from codesuture.guards.base import Rewrite


def registry() -> dict[str, Callable[[list[Any], int, Any, str], Rewrite]]:
    """Guard name -> synthesizer ``(instrs, index, spec, site) -> Rewrite``; *site*
    (``"<guard>@<module>:<line>"``) is what the guard reports when it fires."""
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
    }


__all__ = ["registry"]
