"""Host state: what this machine has seen and withdrawn, for rollback protection.

One small JSON file, ``<state dir>/state.json`` (``--state-dir`` /
``CODESUTURE_STATE_DIR``, default ``$XDG_STATE_HOME/codesuture``), outside every
overlay store, so the attacker of the threat model (who can write a store, not this
machine's state) cannot change it::

    {"format": 1,
     "sets": {"<signer key id>/<set name>": <highest version seen>, ...},
     "withdrawn": {"<sha256 of an overlay>": {"at": "<RFC 3339>", "what": "<stem>"}, ...},
     "rolled_back": {"<site fingerprint>": {"at": "<RFC 3339>", "what": "<module:line qualname>"}, ...}}

* **High-water marks** (TUF's rule for snapshot metadata): the loader refuses a signed
  overlay set whose version is lower than the highest version this host has seen for
  the same signer and set name, and records a higher one when it sees it. A fresh
  machine or container has no memory: ``min_set_version`` in the settings gives the
  deploy a floor there.
* **Withdrawn overlays**: ``codesuture rollback`` records the SHA-256 of every overlay
  it takes out, and the loader refuses those bytes from then on, in any store, even
  if the old files (and an old signed set listing them) are put back.
* **Rolled-back fingerprints**: the site fingerprints of the patches ``codesuture
  rollback`` took out (:func:`codesuture.runtime.incidents.fingerprint`). A healer in
  dev mode never patches a crash with one of them again on its own (no flapping): the
  fix goes back through review.

This is the only file prod mode writes, and only when a newer set version is seen.
A missing file is an empty state; an unreadable or corrupt one is logged and read as
empty (the signed set and ``min_set_version`` still apply). Writes are atomic and
serialized with ``flock``.
"""

from __future__ import annotations

import json
import os

from codesuture.logs import logger
from codesuture.util.clock import iso_utc
from codesuture.util.files import atomic_write, locked, read_regular, remove_stale_temps

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover - typing costs milliseconds on the boot path
    from typing import Any

log = logger("codesuture.trust")

STATE_FILE = "state.json"
MAX_STATE_BYTES = 4 * 1024 * 1024
_CACHE: dict[str, dict[str, Any]] = {}


def _empty() -> dict[str, Any]:
    return {"format": 1, "sets": {}, "withdrawn": {}, "rolled_back": {}}


def _parse(raw: bytes, path: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
        if not isinstance(data, dict) or data.get("format") != 1:
            raise ValueError("not a CodeSuture state file")
        sets, withdrawn = data.get("sets", {}), data.get("withdrawn", {})
        if not isinstance(sets, dict) or not all(isinstance(v, int) for v in sets.values()):
            raise ValueError("'sets' must map names to versions")
        if not isinstance(withdrawn, dict):
            raise ValueError("'withdrawn' must be an object")
        rolled_back = data.get("rolled_back", {})
        if not isinstance(rolled_back, dict):
            raise ValueError("'rolled_back' must be an object")
        return {"format": 1, "sets": dict(sets), "withdrawn": dict(withdrawn), "rolled_back": dict(rolled_back)}
    except ValueError as exc:
        log.warning("host state %s ignored: %s", path, exc)
        return _empty()


class HostState:
    """The state file in *directory* (created on first write)."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.path = os.path.join(directory, STATE_FILE)

    def __repr__(self) -> str:
        return f"HostState({self.path!r})"

    def _read(self) -> dict[str, Any]:
        from codesuture.errors import FileError

        try:
            raw = read_regular(self.path, MAX_STATE_BYTES)
        except FileError as exc:
            log.warning("host state %s ignored: %s", self.path, exc.reason)
            return _empty()
        return _empty() if raw is None else _parse(raw, self.path)

    def load(self) -> dict[str, Any]:
        """The state, read once per process (writes through this object refresh it)."""
        cached = _CACHE.get(self.path)
        if cached is None:
            cached = _CACHE[self.path] = self._read()
        return cached

    def seen_version(self, keyid: str, name: str) -> int:
        """Highest version of set *name* signed by *keyid* seen here (0: never)."""
        return int(self.load()["sets"].get(f"{keyid}/{name}", 0))

    def withdrawn(self) -> dict[str, Any]:
        """Overlay SHA-256 -> ``{"at", "what"}`` of every withdrawn overlay."""
        return self.load()["withdrawn"]

    def rolled_back(self, fresh: bool = False) -> dict[str, Any]:
        """Site fingerprint -> ``{"at", "what"}`` of every patch ``codesuture rollback``
        took out. *fresh*: read the file again (a rollback by another process since)."""
        if fresh:
            _CACHE[self.path] = self._read()
        return dict(self.load()["rolled_back"])

    def record_version(self, keyid: str, name: str, version: int) -> None:
        """Remember *version* when it is higher than what was seen. Never raises: a
        state that cannot be written is logged (the load goes on)."""
        try:
            self._update(lambda data: _raise_version(data, f"{keyid}/{name}", version))
        except OSError as exc:
            log.info("host state %s not updated: %s", self.path, exc.strerror or exc)

    def withdraw(self, digests: dict[str, str], now: float, fingerprints: dict[str, str] | None = None) -> None:
        """Record overlay SHA-256 digests (-> what they were) as withdrawn, and the site
        *fingerprints* (-> ``module:line qualname``) of the patches taken out as rolled
        back. Raises ``OSError`` when the state cannot be written (the caller reports it)."""
        at = iso_utc(now)

        def add(data: dict[str, Any]) -> bool:
            for digest, what in digests.items():
                data["withdrawn"][digest] = {"at": at, "what": what}
            for fp, what in (fingerprints or {}).items():
                data["rolled_back"][fp] = {"at": at, "what": what}
            return bool(digests or fingerprints)

        self._update(add)

    def _update(self, change: Any) -> None:
        with locked(os.path.join(self.directory, ".state.lock")):
            remove_stale_temps(self.directory, STATE_FILE)  # a killed writer's, under the lock
            data = self._read()
            if change(data):
                atomic_write(self.path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode(), mode=0o600)
            _CACHE[self.path] = data


def _raise_version(data: dict[str, Any], key: str, version: int) -> bool:
    if int(data["sets"].get(key, 0)) >= version:
        return False
    data["sets"][key] = version
    return True


def clear_cache() -> None:
    """Forget state read in this process (tests; after another process changed it)."""
    _CACHE.clear()


__all__ = ["HostState", "STATE_FILE", "clear_cache"]
