"""Overlay metadata: the JSON sidecar (``<stem>.json``) written beside every overlay.

It names the module, the exact source it was built from (SHA-256 and a portable
origin, see :mod:`codesuture.overlay.names`), the interpreter, the overlay's own
digest, every patch inside (see :class:`~codesuture.patch.spec.PatchRecord`) and, for
a module an installed distribution owns, that distribution (``package``: its PEP 503
name and version when the overlay was made; see :mod:`codesuture.overlay.package`).
When an overlay is signed, the same object becomes the in-toto predicate, and the
sidecar is only a convenience: review tools and the loader read the signed Statement.
"""

from __future__ import annotations

import json
import sys
from collections import namedtuple
from importlib.util import MAGIC_NUMBER

from codesuture.errors import OverlayError
from codesuture.patch.spec import PatchRecord

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from typing import Sequence

#: Format 2: patch offsets name instructions of the unpatched code (format 1 chained them).
META_FORMAT = 2


def interpreter_info() -> dict[str, str]:
    """This interpreter as recorded in metadata: version, cache tag, magic (hex)."""
    return {
        "implementation": sys.implementation.name,
        "version": "%d.%d.%d" % sys.version_info[:3],
        "cache_tag": sys.implementation.cache_tag or "",
        "magic": MAGIC_NUMBER.hex(),
    }


def package_field(value: object) -> "dict[str, str] | None":
    """A metadata ``package`` value checked: None, or ``{"name", "version"}`` (non-empty
    strings). Raises ValueError otherwise."""
    if value is None:
        return None
    if (not isinstance(value, dict) or set(value) != {"name", "version"}
            or not all(isinstance(value[k], str) and value[k] for k in ("name", "version"))):
        raise ValueError(f"package must be {{'name': str, 'version': str}}, not {value!r}")
    return {"name": value["name"], "version": value["version"]}


def overlay_expiry(patches: "Sequence[PatchRecord]") -> str:
    """The expiry of an overlay holding *patches* (records with an ``expires`` RFC 3339
    UTC time, ``""`` for none): the latest of theirs, ``""`` when any patch never
    expires (or there are none). Each patch keeps its own expiry: the loader runs the
    source's code of a function whose patch expired and keeps the others
    (:mod:`codesuture.loader.resolve`), so one short-lived patch never expires the rest."""
    times = [getattr(p, "expires", "") for p in patches]
    if not times or not all(times):
        return ""
    return max(times)


class OverlayMeta(namedtuple(
    "_OverlayMeta",
    "module key origin source_sha256 overlay_sha256 python created expires tier patches package",
    defaults=(None, "", "", "auto", (), None),
)):
    """Metadata of one overlay.

    ``module``: import name, or ``__main__`` for a script. ``key``: the store key
    (see :mod:`codesuture.overlay.names`). ``origin``: where the source lives,
    portable (``app:...``, ``site-packages:...``, ``sys.path:...``). Digests are
    lowercase hex SHA-256. Times are RFC 3339 UTC. ``package``: ``{"name": ..., "version":
    ...}`` of the distribution that owns the module, or None (an app module, or metadata
    written before it was recorded).
    """

    __slots__ = ()

    def __new__(cls, *args: object, **kwargs: object) -> "OverlayMeta":
        self = super().__new__(cls, *args, **kwargs)
        fixes: dict[str, object] = {}
        if self.python is None:
            fixes["python"] = interpreter_info()
        if not isinstance(self.patches, list):
            fixes["patches"] = list(self.patches)
        return self._replace(**fixes) if fixes else self

    def to_json(self) -> "dict[str, object]":
        return {
            "format": META_FORMAT,
            "module": self.module,
            "key": self.key,
            "origin": self.origin,
            "source_sha256": self.source_sha256,
            "overlay_sha256": self.overlay_sha256,
            "python": dict(self.python),
            "created": self.created,
            "expires": self.expires,
            "tier": self.tier,
            "patches": [p.to_json() for p in self.patches],
            **({"package": dict(self.package)} if self.package else {}),
        }

    def dumps(self) -> bytes:
        return (json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, data: object, path: object = "<metadata>") -> "OverlayMeta":
        """Validate and build from parsed JSON; raises :class:`OverlayError` naming *path*."""
        try:
            if not isinstance(data, dict) or "format" not in data:
                raise ValueError("not CodeSuture overlay metadata")
            if data["format"] != META_FORMAT:
                raise ValueError(f"metadata format {data['format']!r} is not {META_FORMAT} (written by another CodeSuture; heal again)")
            return cls(
                module=str(data["module"]),
                key=str(data["key"]),
                origin=str(data.get("origin", "")),
                source_sha256=str(data["source_sha256"]),
                overlay_sha256=str(data["overlay_sha256"]),
                python={str(k): str(v) for k, v in dict(data["python"]).items()},
                created=str(data.get("created", "")),
                expires=str(data.get("expires", "")),
                tier=str(data.get("tier", "auto")),
                patches=[PatchRecord.from_json(p) for p in data.get("patches", [])],
                package=package_field(data.get("package")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise OverlayError(path, f"malformed metadata: {exc}") from None

    @classmethod
    def loads(cls, raw: bytes, path: object = "<metadata>") -> "OverlayMeta":
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise OverlayError(path, f"metadata is not JSON: {exc}") from None
        return cls.from_json(data, path)
