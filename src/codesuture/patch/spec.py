"""The one model of a patch, shared by the live patcher and the overlay loader.

A :class:`PatchRecord` is enough to re-create the patched code object from freshly
compiled source: find the code object by ``qualname`` and ``firstlineno``, find the
failing instruction at ``offset`` (bytes, as ``tb_lasti``) in that code object *as
compiled from the source, before any patch*, check it against ``opname`` and its
source position, and synthesize ``guard`` there with ``default``. Because every
record names an instruction of the unpatched code, the records of one function form
a set: they are applied together in source order (see
:func:`codesuture.patch.synthesize.synthesize_all`), whatever order and whichever
process made them, and two records with the same :attr:`PatchRecord.site` are the
same patch. Pure data: no heavy imports.
"""

from __future__ import annotations

import time
from collections import namedtuple

from codesuture.util.clock import parse_iso_utc

#: Default TTL of a patch, in seconds (30 days). Expired patches are reported, not loaded.
DEFAULT_TTL_SECONDS = 30 * 24 * 3600

#: The values a guard may yield, by their stable name in metadata.
#: Every one is a marshal-able constant, except the two empty in-memory files that
#: ``file_guard`` builds at run time and the empty mutable containers (``[]``, ``{}``,
#: ``set()``), which are made anew each time a guard yields one (:func:`default_value`).
DEFAULTS: "dict[str, object]" = {
    "None": None,
    "0": 0,
    "0.0": 0.0,
    "''": "",
    "b''": b"",
    "()": (),
    "False": False,
    "True": True,
    "[]": [],
    "{}": {},
    "set()": set(),
    "io.StringIO()": "io.StringIO()",
    "io.BytesIO()": "io.BytesIO()",
}
#: Defaults that are mutable: never shared, never a code constant.
MUTABLE_DEFAULTS = frozenset({"[]", "{}", "set()"})


def default_value(name: str) -> object:
    """The value of default *name* (a key of :data:`DEFAULTS`; None for an unknown
    name), a new object for the mutable ones, so no two firings share a list."""
    if name in MUTABLE_DEFAULTS:
        return {"[]": list, "{}": dict, "set()": set}[name]()
    return DEFAULTS.get(name)


# namedtuples, not dataclasses: this module is on the overlay-loading path, where
# importing dataclasses (and inspect with it) would cost more than the load itself.


#: Suffix of ``GuardSpec.flow``: a ``bool`` default declines when the guard fires.
NO_TRUTH = ";notruth"
#: Suffix of a ``GuardSpec.flow`` ``"return:..."`` (before :data:`NO_TRUTH`): the
#: guarded value is returned unchanged and its static default is None, so the consumer
#: of the caller it is returned to decides the default when the guard fires.
AS_IS = ";asis"


class GuardSpec(namedtuple("_GuardSpec", "guard form default links flow")):
    """What to synthesize: the guard family, its form and the value it yields.

    ``guard``: family name (``null_guard``, ``key_guard``, ...).
    ``form``: the variant inside a family (``attr``, ``method``, ``operator``,
    ``membership``, ...); ``""`` where a family has one form.
    ``default``: a key of :data:`DEFAULTS`.
    ``links``: for ``chain_subscript_guard``, how many chained subscripts are guarded.
    ``flow``: what the value-flow policy (:mod:`codesuture.patch.flow`) asked of the
    guard: ``""`` (the value flows on as data), ``"return:value"`` / ``"return:truth"`` / ``"return:choice"``
    (the value is returned: when the guard fires, its callers are checked first, and a
    caller that decides with it gets the original exception), or
    ``"raise:<offset>:<jump|next>:<pops>"`` (the first decision after the guard, the
    conditional jump at that offset, raises on that side: the guard takes it, popping
    that many stack items); ``"return:..."`` may go on with :data:`AS_IS`
    (``";asis"``: the value is returned unchanged, so the caller's consumer decides its
    default when the guard fires); any of these may end in :data:`NO_TRUTH` (``";notruth"``):
    a default that turns out to be a ``bool`` when the guard fires (the empty value of
    a container of flags) declines, because the value reaches a decision (even one
    whose sides rejoin) or a store for later, and a flag is what it decides. Raises
    ``ValueError`` for an unknown default.
    """

    __slots__ = ()

    def __new__(cls, guard: str, form: str = "", default: str = "None", links: int = 1,
                flow: str = "") -> "GuardSpec":
        if default not in DEFAULTS:
            raise ValueError(f"unknown guard default {default!r}")
        return super().__new__(cls, str(guard), str(form), default, int(links), str(flow))


#: ``evidence["default"]`` of a guard whose value is returned unchanged (:data:`AS_IS`),
#: followed by ``", then <its own rule>"`` when it has one.
CALLER_RULE = "caller's consumer"


def describe_yield(static: str, rule: object) -> str:
    """``"''"`` for a static default; ``"the empty value from container elements, else
    None"`` for a typed one (*rule*, from ``evidence["default"]``); ``"what the
    caller's consumer needs, else ..."`` for a value returned unchanged."""
    if isinstance(rule, str) and rule.startswith(CALLER_RULE):
        rest = rule[len(CALLER_RULE):].removeprefix(", then ")
        return f"what the caller's consumer needs, else {describe_yield(static, rest) if rest else static}"
    if rule in ("container elements", "other operand", "method name"):
        return f"the empty value from {rule}, else {static}"
    return static


class PatchRecord(namedtuple(
    "_PatchRecord",
    "module qualname firstlineno offset opname line expression exception guard col end_col added removed created expires evidence end_line",
    defaults=(None, None, 0, 0, "", "", None, None),
)):
    """One patch: where it is, what it does, and its evidence.

    ``offset`` is the failing instruction's offset in bytes (``tb_lasti``) in the
    function's code object as compiled from the source (no patch applied); ``opname``
    the instruction's name there; ``line``/``end_line``/``col``/``end_col`` its source
    position (``co_positions``; columns are UTF-8 byte offsets), checked too and used
    to re-locate the instruction on another interpreter. ``exception``: the exception
    type, and its message only where it cannot carry user data (see
    :func:`codesuture.crash.diagnose.describe_exception`). ``added``/``removed`` count
    instructions (the diff gate's instruction delta). ``created``/``expires`` are RFC
    3339 UTC timestamps. ``evidence``: a dict (repro results and the like).
    """

    __slots__ = ()

    @property
    def site(self) -> "tuple[str, int, int]":
        """``(qualname, firstlineno, offset)``: what makes two records the same patch."""
        return (self.qualname, self.firstlineno, self.offset)

    @property
    def yields(self) -> str:
        """What the patch yields, in words: its fixed or consumer default, or, for a
        typed default (``evidence["default"]``, see
        :func:`codesuture.guards.families.default_rule`), which evidence decides it."""
        return describe_yield(self.guard.default, (self.evidence or {}).get("default", ""))

    def expired(self, now: "float | None" = None) -> bool:
        """True when ``expires`` is set and in the past (or unparseable)."""
        if not self.expires:
            return False
        try:
            return parse_iso_utc(self.expires) <= (time.time() if now is None else now)
        except ValueError:
            return True

    def to_json(self) -> "dict[str, object]":
        d = self._asdict()
        d["guard"] = {k: v for k, v in self.guard._asdict().items() if k != "flow" or v}
        d["evidence"] = dict(self.evidence or {})
        return d

    @classmethod
    def from_json(cls, data: "dict[str, object]") -> "PatchRecord":
        """Build from :meth:`to_json` output; raises ``ValueError``/``KeyError``/
        ``TypeError`` on a malformed record."""
        if not isinstance(data, dict):
            raise TypeError("patch record is not an object")
        kwargs = {k: v for k, v in data.items() if k in cls._fields}
        guard = data["guard"]
        if not isinstance(guard, dict):
            raise TypeError("patch guard is not an object")
        kwargs["guard"] = GuardSpec(**guard)
        for name in ("firstlineno", "offset"):
            if not isinstance(kwargs.get(name), int):
                raise TypeError(f"patch {name} is not an integer")
        return cls(**kwargs)
