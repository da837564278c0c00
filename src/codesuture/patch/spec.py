"""The one model of a patch, shared by the live patcher and the overlay loader.

A :class:`PatchRecord` is enough to re-create the patched code object from freshly
compiled source: find the code object by ``qualname`` and ``firstlineno``, find the
failing instruction at ``offset`` (bytes, as ``tb_lasti``, in the code as it was
before this patch), and synthesize ``guard`` there with ``default``. Patches of one
module apply in the order they were made. Pure data: no heavy imports.
"""

from __future__ import annotations

import time
from collections import namedtuple

#: Default TTL of a patch, in seconds (30 days). Expired patches are reported, not loaded.
DEFAULT_TTL_SECONDS = 30 * 24 * 3600

#: The values a guard may yield, by their stable name in metadata.
#: Every one is a marshal-able constant, except the two empty in-memory files that
#: ``file_guard`` builds at run time.
DEFAULTS: "dict[str, object]" = {
    "None": None,
    "0": 0,
    "0.0": 0.0,
    "''": "",
    "b''": b"",
    "()": (),
    "False": False,
    "True": True,
    "io.StringIO()": "io.StringIO()",
    "io.BytesIO()": "io.BytesIO()",
}


def iso_utc(epoch: float) -> str:
    """Format *epoch* (seconds) as an RFC 3339 UTC timestamp, e.g. ``2026-11-21T09:00:00Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def is_iso_utc(text: object) -> bool:
    """True when *text* has exactly the form :func:`iso_utc` writes
    (``YYYY-MM-DDTHH:MM:SSZ``). Such timestamps order as strings do, so the load path
    compares them without parsing."""
    if not isinstance(text, str) or len(text) != 20:
        return False
    return (text[4] == text[7] == "-" and text[10] == "T" and text[13] == text[16] == ":" and text[19] == "Z"
            and (text[:4] + text[5:7] + text[8:10] + text[11:13] + text[14:16] + text[17:19]).isdigit())


def parse_iso_utc(text: str) -> float:
    """Inverse of :func:`iso_utc`; raises ``ValueError`` on another format."""
    import calendar

    return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))


# namedtuples, not dataclasses: this module is on the overlay-loading path, where
# importing dataclasses (and inspect with it) would cost more than the load itself.


class GuardSpec(namedtuple("_GuardSpec", "guard form default links")):
    """What to synthesize: the guard family, its form and the value it yields.

    ``guard``: family name (``null_guard``, ``key_guard``, ...).
    ``form``: the variant inside a family (``attr``, ``method``, ``operator``,
    ``membership``, ...); ``""`` where a family has one form.
    ``default``: a key of :data:`DEFAULTS`.
    ``links``: for ``chain_subscript_guard``, how many chained subscripts are guarded.
    Raises ``ValueError`` for an unknown default.
    """

    __slots__ = ()

    def __new__(cls, guard: str, form: str = "", default: str = "None", links: int = 1) -> "GuardSpec":
        if default not in DEFAULTS:
            raise ValueError(f"unknown guard default {default!r}")
        return super().__new__(cls, str(guard), str(form), default, int(links))


_PATCH_FIELDS = (
    "module qualname firstlineno offset opname line expression exception guard "
    "col end_col added removed created expires evidence"
)


class PatchRecord(namedtuple("_PatchRecord", _PATCH_FIELDS, defaults=(None, None, 0, 0, "", "", None))):
    """One patch: where it is, what it does, and its evidence.

    ``offset`` is the failing instruction's offset in bytes (``tb_lasti``) in the code
    object as it was before this patch; ``opname`` the instruction's name there;
    ``line``/``col``/``end_col`` its source position (``co_positions``), checked too.
    ``added``/``removed`` count instructions (the diff gate's instruction delta).
    ``created``/``expires`` are RFC 3339 UTC timestamps. ``evidence``: a dict (repro
    results and the like).
    """

    __slots__ = ()

    @property
    def yields(self) -> str:
        return self.guard.default

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
        d["guard"] = self.guard._asdict()
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
