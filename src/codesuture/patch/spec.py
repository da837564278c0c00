"""The one model of a patch, shared by the live patcher and the overlay loader.

A :class:`PatchRecord` is enough to re-create the patched code object from freshly
compiled source: find the code object by ``qualname`` and ``firstlineno``, find the
failing instruction at ``offset`` (bytes, as ``tb_lasti``, in the code as it was
before this patch), and synthesize ``guard`` there with ``default``. Patches of one
module apply in the order they were made. Pure data: no heavy imports.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any

#: Default TTL of a patch, in seconds (30 days). Expired patches are reported, not loaded.
DEFAULT_TTL_SECONDS = 30 * 24 * 3600

#: The values a guard may yield, by their stable name in metadata.
#: Every one is a marshal-able constant, except the two empty in-memory files that
#: ``file_guard`` builds at run time.
DEFAULTS: dict[str, Any] = {
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


def parse_iso_utc(text: str) -> float:
    """Inverse of :func:`iso_utc`; raises ``ValueError`` on another format."""
    import calendar

    return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))


@dataclass(frozen=True)
class GuardSpec:
    """What to synthesize: the guard family, its form and the value it yields.

    ``guard``: family name (``null_guard``, ``key_guard``, ...).
    ``form``: the variant inside a family (``attr``, ``method``, ``operator``,
    ``membership``, ...); ``""`` where a family has one form.
    ``default``: a key of :data:`DEFAULTS`.
    ``links``: for ``chain_subscript_guard``, how many chained subscripts are guarded.
    """

    guard: str
    form: str = ""
    default: str = "None"
    links: int = 1

    def __post_init__(self) -> None:
        if self.default not in DEFAULTS:
            raise ValueError(f"unknown guard default {self.default!r}")


@dataclass(frozen=True)
class PatchRecord:
    """One patch: where it is, what it does, and its evidence.

    ``offset`` is the failing instruction's offset in bytes (``tb_lasti``) in the code
    object as it was before this patch; ``opname`` the instruction's name there;
    ``line``/``col``/``end_col`` its source position (``co_positions``), checked too.
    ``added``/``removed`` count instructions (the diff gate's instruction delta).
    ``created``/``expires`` are RFC 3339 UTC timestamps.
    """

    module: str
    qualname: str
    firstlineno: int
    offset: int
    opname: str
    line: int | None
    expression: str
    exception: str
    guard: GuardSpec
    col: int | None = None
    end_col: int | None = None
    added: int = 0
    removed: int = 0
    created: str = ""
    expires: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def yields(self) -> str:
        return self.guard.default

    def expired(self, now: float | None = None) -> bool:
        """True when ``expires`` is set and in the past (or unparseable)."""
        if not self.expires:
            return False
        try:
            return parse_iso_utc(self.expires) <= (time.time() if now is None else now)
        except ValueError:
            return True

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["guard"] = asdict(self.guard)
        return d

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "PatchRecord":
        """Build from :meth:`to_json` output; raises ``ValueError``/``KeyError``/
        ``TypeError`` on a malformed record."""
        if not isinstance(data, dict):
            raise TypeError("patch record is not an object")
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["guard"] = GuardSpec(**data["guard"])
        return cls(**kwargs)
