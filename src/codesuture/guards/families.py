"""The one table of guard families: per family, what every stage of the heal and the
review side needs to know about it.

=================  =================================================================
column             read by
=================  =================================================================
``synthesizer``    :mod:`codesuture.patch.synthesize` (through :func:`synthesizer`)
``answers``        :func:`codesuture.crash.diagnose.diagnose` (the exceptions a family
                   may be chosen for)
``forms``          ``rule``: :func:`default_rule` (``evidence.default``, ``explain``);
                   ``raise_side``: the value-flow verdict
                   (:func:`codesuture.crash.diagnose.value_verdict`); ``link_budget``:
                   the diff gate
``budget``,        :mod:`codesuture.patch.diffgate` (:func:`budget`)
``first_link``
``rewrite``        :mod:`codesuture.review.rewrite` (``codesuture suggest``); or None
                   with the reason in ``no_rewrite``
``protects``       ``docs/guards.md``, whose table has exactly one row per family form
                   with the same default rule (checked by ``tests/test_families.py``)
=================  =================================================================

Standard library only, and no guard module is imported until a synthesizer is asked
for: the diagnosis, the diff gate and the review side read the table without
``bytecode``. Imported on the heal path only (never at start-up).
"""

from __future__ import annotations

import builtins
import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

if TYPE_CHECKING:
    from codesuture.guards.base import Firing, Rewrite
    from codesuture.patch.spec import GuardSpec

#: A guard synthesizer: ``(instrs, index, spec, firing) -> Rewrite`` (see
#: :mod:`codesuture.guards.base`).
Synthesizer = Callable[[list[Any], int, "GuardSpec", "Firing"], "Rewrite"]

#: The names :attr:`Form.rule` may take, as recorded in ``evidence.default``.
RULES = ("consumer", "container elements", "other operand", "method name", "fixed", "none known")


@dataclass(frozen=True)
class Form:
    """One variant of a family (``GuardSpec.form``; ``""`` for a family of one form).

    ``rule``: which evidence decides the value when the diagnosis found no consumer
    default (a static default of ``"None"``): one of :data:`RULES` but ``consumer``.
    ``raise_side``: the guard's default goes through
    :func:`codesuture.guards.base.fire` at the failing instruction itself, so it can
    take the raising side of the decision right after it.
    ``link_budget``: instructions the diff gate allows per guarded link after the first
    (``a.b.c``, ``d[a][b]``); 0 for a guard of one instruction.
    ``extra_budget``: instructions the form adds to its family's budget (the compare
    form checks both operands).
    ``no_rewrite``: why ``codesuture suggest`` has no source rewrite for this form of a
    family that has one ("" when it has).
    """

    name: str
    rule: str = "none known"
    raise_side: bool = False
    link_budget: int = 0
    extra_budget: int = 0
    no_rewrite: str = ""


@dataclass(frozen=True)
class Family:
    """One guard family (``GuardSpec.guard``).

    ``synthesizer``: ``"<module>:<function>"`` in :mod:`codesuture.guards`, imported on
    first use. ``answers``: names of the built-in exception classes the diagnosis may
    choose this family for (an instance of one of them). ``budget``: the instructions
    the guard may add (the diff gate; labels and exception-table markers do not count;
    measured on 3.11, the largest with PRECALL, plus 2; 0 for a chain, whose first
    link's family gives it, see ``first_link``). ``fixed``: the guard yields its
    one value (a stand-in file, a coercion), so the consumer never decides it
    (``evidence.default`` is ``fixed``). ``forms``: its variants, in the order of the
    docs table. ``rewrite``: the name of the source rewrite ``codesuture suggest``
    writes for it (:mod:`codesuture.review.rewrite`), or None, with the reason in
    ``no_rewrite``. ``protects``: the expression it guards, in words (the docs row).
    ``first_link``: for a chain, ``GuardSpec.form`` (which exception the first link
    raised) -> the family whose guard (and budget) the first link gets.
    """

    name: str
    synthesizer: str
    answers: tuple[str, ...]
    budget: int
    forms: tuple[Form, ...]
    rewrite: str | None
    protects: str
    fixed: bool = False
    no_rewrite: str = ""
    first_link: tuple[tuple[str, str], ...] = ()

    def form(self, name: str) -> Form | None:
        """The form called *name*; a family of one form (``""``) has it whatever the
        name (the form is not what selects its guard); else None."""
        if len(self.forms) == 1 and not self.forms[0].name:
            return self.forms[0]
        return next((f for f in self.forms if f.name == name), None)


_ONE = (Form(""),)
_CONTAINER = (Form("", "container elements", raise_side=True),)

#: Guard name -> its row. The order is the docs table's.
FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("null_guard", "null:synthesize", ("AttributeError", "TypeError"), 24, (
        Form("attr", raise_side=True, link_budget=22),
        Form("method", "method name"),
        Form("operator", "other operand", raise_side=True),
        Form("operand", "other operand", raise_side=True),
        Form("compare", "other operand", raise_side=True, extra_budget=22),
        Form("membership"),
        Form("format", "fixed", no_rewrite="the fix depends on what the format should show for a missing value"),
        Form("store", "fixed"),
    ), "null", "an operation on a None operand: ``x.a``, ``x.m()``, ``x op y``, ``k in x``, ``f\"{x:spec}\"``, "
       "``x.a = v``"),
    Family("key_guard", "subscript:key_guard", ("KeyError",), 26, _CONTAINER, "key",
           "``m[k]`` with k missing from mapping m"),
    Family("subscript_guard", "subscript:subscript_guard", ("TypeError",), 23,
           (Form("", raise_side=True),), "subscript", "``x[k]`` / ``x[a:b]`` with x None"),
    Family("chain_subscript_guard", "subscript:chain_subscript_guard", ("KeyError", "IndexError", "TypeError"), 0,
           (Form("", "container elements", link_budget=23),), "chain_subscript", "``a[k1][k2]...`` failing at a link",
           first_link=(("key", "key_guard"), ("index", "index_guard"), ("none", "subscript_guard"))),
    Family("index_guard", "subscript:index_guard", ("IndexError",), 36, _CONTAINER, "index",
           "``s[i]`` with i out of range"),
    Family("list_bound_guard", "subscript:index_guard", ("IndexError",), 36, _CONTAINER, "index",
           "``s[K]`` (constant K) out of range"),
    Family("type_coercion_guard", "calls:type_coercion_guard", ("ValueError", "TypeError"), 23, _ONE, "coercion",
           "``int(s)`` / ``float(s)`` of a bad string or None", fixed=True),
    Family("division_guard", "arith:division_guard", ("ZeroDivisionError",), 25, (Form("", raise_side=True),),
           "division", "``a / b``, ``//``, ``%`` (and ``op=``) with b == 0"),
    Family("str_coerce_guard", "arith:str_coerce_guard", ("TypeError",), 27, _ONE, "str_coerce",
           "``a + b`` / ``a += b`` mixing str and non-str", fixed=True),
    Family("file_guard", "calls:file_guard", ("FileNotFoundError",), 28, _ONE, "file",
           "``open(path)`` of a missing path", fixed=True),
    Family("callable_guard", "calls:callable_guard", ("TypeError",), 17, _ONE, "callable",
           "``f(...)`` with f None", fixed=True),
    Family("call_guard", "calls:call_guard",
           ("TypeError", "AttributeError", "KeyError", "IndexError", "ZeroDivisionError", "OverflowError", "ValueError"),
           28, (Form("call"), Form("subscript")), "call_site",
           "a call (or a subscript's ``__getitem__``) raising in C code or the standard library"),
)}


def family(name: str) -> Family | None:
    """The row of guard *name*, or None for a name no family has."""
    return FAMILIES.get(name)


_SYNTHESIZERS: dict[str, Synthesizer] = {}


def synthesizer(name: str) -> Synthesizer | None:
    """The synthesizer of guard *name* (its module imported on first use), or None for
    a name no family has."""
    found = _SYNTHESIZERS.get(name)
    if found is None:
        row = FAMILIES.get(name)
        if row is None:
            return None
        module, _, function = row.synthesizer.partition(":")
        found = _SYNTHESIZERS[name] = getattr(importlib.import_module(f"codesuture.guards.{module}"), function)
    return found


def answers(name: str, exc: BaseException) -> bool:
    """True when *exc* is an instance of one of the exception classes family *name*
    answers (:attr:`Family.answers`)."""
    row = FAMILIES.get(name)
    if row is None:
        return False
    return any(isinstance(exc, getattr(builtins, cls)) for cls in row.answers)


def default_rule(spec: Any) -> str:
    """Which evidence decides the value a guard of *spec* (a
    :class:`~codesuture.patch.spec.GuardSpec`) yields when it fires, as recorded in the
    patch metadata (``evidence.default``) and shown by ``explain``; the last column of
    the table of ``docs/guards.md``. One of :data:`RULES`: ``fixed`` for a family of one
    value, else ``consumer`` when the diagnosis chose a static default, else the form's
    :attr:`Form.rule` (``none known`` for an unknown guard or form); for a value returned
    unchanged (``GuardSpec.flow`` with :data:`~codesuture.patch.spec.AS_IS`) whose own
    rule knows a type at most, ``caller's consumer`` first (``"caller's consumer, then
    container elements"``)."""
    from codesuture.patch.spec import AS_IS, CALLER_RULE

    row = FAMILIES.get(spec.guard)
    if row is not None and row.fixed:
        return "fixed"
    if spec.default != "None":
        return "consumer"
    own = _own_rule(spec)
    if AS_IS in spec.flow and own in _CALLER_FIRST:  # returned unchanged: the caller's consumer first
        return CALLER_RULE if own == "none known" else f"{CALLER_RULE}, then {own}"
    return own


#: Rules that know a type at most (not a value): the consumer of the caller a value
#: is returned to unchanged goes first (:data:`codesuture.patch.spec.AS_IS`). "other
#: operand" computes the operation's value itself (``None + 1`` is ``1``), and stays.
_CALLER_FIRST = frozenset({"container elements", "none known"})


def _own_rule(spec: Any) -> str:
    row = FAMILIES.get(spec.guard)
    form = row.form(spec.form) if row is not None else None
    return form.rule if form is not None else "none known"


def caller_first(spec: Any) -> bool:
    """True when the default of a guard of *spec* is read from the consumer of the
    caller its value is returned to, if it is returned unchanged: its static default
    is None and its own rule knows a type at most (``container elements``,
    ``none known``); a stand-in method, a skipped store and the fixed guards never."""
    return spec.default == "None" and default_rule(spec._replace(flow="")) in _CALLER_FIRST


def documented_rule(row: Family, form: Form) -> str:
    """The default rule of *form* of *row* as the last column of the table of
    ``docs/guards.md`` gives it: ``fixed`` for a family (or form) of one value, else
    ``consumer, else <rule>``."""
    return "fixed" if row.fixed or form.rule == "fixed" else f"consumer, else {form.rule}"


def raise_side(spec: Any) -> bool:
    """True when the guard of *spec* (one link) can take the raising side of the
    decision after its failing instruction (:attr:`Form.raise_side`)."""
    row = FAMILIES.get(spec.guard)
    form = row.form(spec.form) if row is not None else None
    return form is not None and form.raise_side and spec.links == 1


def budget(spec: Any) -> int | None:
    """The instructions the guard of *spec* may add (the diff gate), or None for an
    unknown guard: the family's :attr:`Family.budget`, or for a chain the budget of the
    family its first link is (an unknown form: ``index_guard``'s), plus the form's
    :attr:`Form.link_budget` per further link."""
    row = FAMILIES.get(spec.guard)
    if row is None:
        return None
    form = row.form(spec.form)
    link = form.link_budget if form is not None else 0
    if row.first_link:
        first = FAMILIES[dict(row.first_link).get(spec.form, "index_guard")]
        return first.budget + link * max(spec.links - 1, 0)
    if link and spec.links > 1:
        return row.budget + link * (spec.links - 1)
    return row.budget + (form.extra_budget if form is not None else 0)


__all__ = ["Family", "Form", "FAMILIES", "RULES", "family", "synthesizer", "answers", "default_rule",
           "documented_rule", "raise_side", "budget"]
