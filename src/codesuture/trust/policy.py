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

Signed overlays carry a DSSE envelope (``<stem>.dsse.json``, Ed25519, verified against
the trust root) or, when Sigstore identity settings are configured
(``CODESUTURE_SIGSTORE_IDENTITY``, ``CODESUTURE_SIGSTORE_ISSUER``, optionally
``CODESUTURE_SIGSTORE_STAGING=1``), a Sigstore bundle (``<stem>.sigstore.json``,
verified offline against the trust root embedded in ``sigstore``).

Import cost: this module imports only the standard library and CodeSuture's light
modules. ``cryptography`` and ``sigstore`` are imported inside functions, the first
time a signed overlay is admitted. The trust root is loaded once per process per keys
directory (see :func:`trust_root`).
"""

from __future__ import annotations

import hashlib
import os
import _thread
import time
from collections import namedtuple

from codesuture.errors import CodeSutureError, OverlayRefused, TrustError
from codesuture.logs import logger
from codesuture.overlay.format import MAX_OVERLAY_BYTES
from codesuture.overlay.index import (
    ENVELOPE_SUFFIX,
    MAX_ENVELOPE_BYTES,
    MAX_META_BYTES,
    META_SUFFIX,
    OVERLAY_SUFFIX,
    SIGSTORE_SUFFIX,
)
from codesuture.overlay.model import OverlayMeta
from codesuture.patch.spec import is_iso_utc, iso_utc

# Not imported (typing and dataclasses would cost more than admitting an overlay):
# Entry is codesuture.overlay.store.Entry, TrustRoot is codesuture.trust.keys.TrustRoot.

log = logger("codesuture.trust")

ENV_KEYS = "CODESUTURE_KEYS"
ENV_REQUIRE_SIGNED = "CODESUTURE_REQUIRE_SIGNED"
ENV_SIGSTORE_IDENTITY = "CODESUTURE_SIGSTORE_IDENTITY"
ENV_SIGSTORE_ISSUER = "CODESUTURE_SIGSTORE_ISSUER"
ENV_SIGSTORE_STAGING = "CODESUTURE_SIGSTORE_STAGING"


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


class LoadPolicy(
    namedtuple(
        "_LoadPolicy",
        "keys_dir require_signed sigstore_identity sigstore_issuer sigstore_staging strict_statements",
        defaults=(None, False, None, None, False, False),
    )
):
    """``keys_dir``: the trust root (public keys, ``revoked.json``), or None.
    ``require_signed``: refuse unsigned overlays even without a trust root.
    ``sigstore_identity``/``sigstore_issuer``: accept Sigstore-signed overlays whose
    certificate has this SAN identity and OIDC issuer (``sigstore_staging``: verify
    against Sigstore's staging trust root instead of production).
    ``strict_statements``: also validate each verified statement with
    ``sigstore.dsse.Statement`` (``codesuture verify`` does; the import-time loader
    does not, for start-up cost: see :mod:`codesuture.trust.statement`)."""

    __slots__ = ()

    @property
    def allows_unsigned(self) -> bool:
        return self.keys_dir is None and not self.require_signed and not self.sigstore_identity

    @classmethod
    def from_env(cls, environ: "os._Environ[str] | dict[str, str] | None" = None) -> "LoadPolicy":
        env = os.environ if environ is None else environ
        keys = env.get(ENV_KEYS)
        return cls(
            keys or None,
            _truthy(env.get(ENV_REQUIRE_SIGNED)),
            env.get(ENV_SIGSTORE_IDENTITY) or None,
            env.get(ENV_SIGSTORE_ISSUER) or None,
            _truthy(env.get(ENV_SIGSTORE_STAGING)),
        )


_ROOTS: "dict[str, TrustRoot | TrustError]" = {}
_ROOTS_LOCK = _thread.allocate_lock()  # _thread: threading costs an import at start-up


def trust_root(policy: LoadPolicy) -> "TrustRoot":
    """The trust root of *policy*, loaded once per process per keys directory (a load
    failure is remembered too, so a broken trust root costs one read, not one per
    import). Raises :class:`TrustError` when there is none or it is malformed."""
    if policy.keys_dir is None:
        raise TrustError("no trust root configured (--keys / CODESUTURE_KEYS)")
    with _ROOTS_LOCK:
        cached = _ROOTS.get(os.fspath(policy.keys_dir))
        if cached is None:
            from codesuture.trust.keys import TrustRoot

            try:
                cached = TrustRoot.load(policy.keys_dir)
            except TrustError as exc:
                cached = exc
            _ROOTS[os.fspath(policy.keys_dir)] = cached
    if isinstance(cached, TrustError):
        raise cached
    return cached


def clear_trust_root_cache() -> None:
    """Forget loaded trust roots and overlay sets (after ``keys/``, ``revoked.json`` or a
    signed overlay set changed)."""
    with _ROOTS_LOCK:
        _ROOTS.clear()
        _SETS.clear()


#: (directory, keys dir) -> ({overlay file name: signed fields}, signer key id)
_SETS: "dict[tuple[str, str], tuple[dict[str, dict[str, str]], str]]" = {}


def _signed_set(entry: "Entry", policy: LoadPolicy, root: "TrustRoot | None") -> "tuple[dict[str, dict[str, str]], str]":
    """The verified overlay set of *entry*'s directory (verified once per process), or
    empty when there is none, it does not verify (logged once), or *entry* is not in a
    directory store."""
    directory = getattr(entry, "directory", None)
    if directory is None or (policy.keys_dir is None and root is None):
        return {}, ""
    cache_key = (os.fspath(directory), os.fspath(policy.keys_dir) if policy.keys_dir is not None else f"root:{id(root)}")
    with _ROOTS_LOCK:
        cached = _SETS.get(cache_key)
    if cached is None:
        from codesuture.trust.manifest import load_verified_set

        try:
            cached = load_verified_set(directory, root if root is not None else trust_root(policy))
        except TrustError as exc:
            # INFO: each overlay it would have covered says why it is refused (or loads from its own envelope).
            log.info("signed overlay set of %s not used: %s", directory, exc.reason)
            cached = ({}, "")
        with _ROOTS_LOCK:
            _SETS[cache_key] = cached
    return cached


def _admit_from_set(
    entry: "Entry", digest: str, envelope: "bytes | None", policy: LoadPolicy, root: "TrustRoot | None"
) -> "tuple[OverlayMeta, str] | None":
    """Metadata vouched for by the directory's signed overlay set when it covers these
    exact overlay bytes and this exact envelope; None otherwise (the overlay's own
    envelope decides)."""
    if envelope is None or policy.strict_statements:
        return None
    entries, signer = _signed_set(entry, policy, root)
    info = entries.get(entry.name + OVERLAY_SUFFIX)
    if (info is None or digest != info["sha256"]
            or hashlib.sha256(envelope).hexdigest() != info["envelope_sha256"]):
        return None
    meta = OverlayMeta(
        module=info["module"], key=info["key"], origin="", source_sha256=info["source_sha256"],
        overlay_sha256=info["sha256"], python={"cache_tag": info["cache_tag"], "magic": info["magic"]},
        created="", expires=info["expiresAt"], tier="auto", patches=[],
    )
    return meta, signer


class Admitted(namedtuple("_Admitted", "overlay_bytes meta signer")):
    """An overlay that passed policy: its bytes, its metadata (:class:`OverlayMeta`),
    and who signed it (a key id, a Sigstore identity, or None when unsigned)."""

    __slots__ = ()


_NOW: list = [None, ""]


def _now_text(now: float) -> str:
    """``iso_utc(now)``, formatted once per second of *now* (admission runs per module)."""
    second = int(now)
    if _NOW[0] != second:
        _NOW[0], _NOW[1] = second, iso_utc(second)
    return _NOW[1]


def _refuse(entry: Entry, reason: str) -> OverlayRefused:
    return OverlayRefused(entry.name, reason)


def admit(entry: Entry, policy: LoadPolicy, now: float | None = None, *, root: "TrustRoot | None" = None) -> Admitted:
    """Admit *entry* under *policy* or raise :class:`OverlayRefused` with the reason.

    *now*: epoch seconds for the expiry check (default: the current time). *root*: a
    trust root to use instead of the per-process cached one of ``policy.keys_dir``
    (``codesuture verify`` passes a freshly loaded one).

    Order: size caps, signature (when signed or required), subject/overlay digest,
    revocation (overlay digest, signer key id), expiry. The overlay bytes are never
    unmarshalled here.
    """
    now = time.time() if now is None else now
    try:
        data = entry.read(OVERLAY_SUFFIX, MAX_OVERLAY_BYTES)
        if data is None:
            raise _refuse(entry, "overlay file is missing")
        signer: str | None = None
        has_keys = policy.keys_dir is not None or root is not None
        envelope = entry.read(ENVELOPE_SUFFIX, MAX_ENVELOPE_BYTES)
        # A signed overlay set pinning these bytes and this envelope admits without a
        # per-overlay signature check (one verification per directory).
        digest = hashlib.sha256(data).hexdigest()
        from_set = _admit_from_set(entry, digest, envelope, policy, root) if has_keys and not policy.allows_unsigned else None
        sigstore_bundle = None
        if from_set is None and policy.sigstore_identity and (envelope is None or not has_keys):
            sigstore_bundle = entry.read(SIGSTORE_SUFFIX, MAX_ENVELOPE_BYTES)
        if from_set is not None:
            meta, signer = from_set
        elif envelope is not None and not policy.allows_unsigned and (has_keys or sigstore_bundle is None):
            meta, signer = _admit_signed(entry, envelope, data, policy, root)
        elif sigstore_bundle is not None:
            meta, signer = _admit_sigstore(entry, sigstore_bundle, data, policy)
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
    if digest != meta.overlay_sha256:
        raise _refuse(entry, "overlay bytes do not match their recorded digest (tampered or torn)")
    if policy.keys_dir is not None or root is not None:
        try:
            root = root if root is not None else trust_root(policy)
        except TrustError as exc:
            raise _refuse(entry, exc.reason) from None
        if digest in root.revoked_overlays:
            raise _refuse(entry, f"revoked overlay (sha256 {digest} is in revoked.json)")
        if signer is not None and signer in root.revoked_keys:
            raise _refuse(entry, f"revoked key {signer}")
    if meta.expires:
        if not is_iso_utc(meta.expires):
            raise _refuse(entry, f"expiry {meta.expires!r} is not an RFC 3339 UTC time")
        if meta.expires <= _now_text(now):
            raise _refuse(entry, f"expired at {meta.expires}")
    if signer is None:
        log.warning("loading UNSIGNED overlay %s (no trust root configured)", entry.name)
    return Admitted(data, meta, signer)


def _admit_signed(
    entry: Entry, envelope: bytes, data: bytes, policy: LoadPolicy, root: "TrustRoot | None" = None
) -> tuple[OverlayMeta, str]:
    """Verify the DSSE envelope against the trust root; return (metadata from the
    verified predicate, signer key id). Raises :class:`OverlayRefused`.

    Nothing from the envelope is interpreted before its signature verified; the
    statement's subject must name this overlay file and carry the SHA-256 of *data*.
    """
    from codesuture.trust import dsse
    from codesuture.trust.statement import meta_from_statement

    overlay_name = entry.name + OVERLAY_SUFFIX
    try:
        verified = dsse.verify(
            envelope, root if root is not None else trust_root(policy), dsse.INTOTO_PAYLOAD_TYPE, entry.name + ENVELOPE_SUFFIX
        )
        meta, subject_digest = meta_from_statement(verified.payload, overlay_name, strict=policy.strict_statements)
    except TrustError as exc:
        raise _refuse(entry, exc.reason) from None
    if hashlib.sha256(data).hexdigest() != subject_digest:
        raise _refuse(entry, "overlay bytes do not match the signed subject digest (tampered)")
    return meta, verified.keyid


def _admit_sigstore(entry: Entry, bundle: bytes, data: bytes, policy: LoadPolicy) -> tuple[OverlayMeta, str]:
    """Verify a Sigstore bundle (DSSE in-toto statement) offline against the identity
    in *policy*; return (metadata, ``"sigstore:<identity>"``). Raises :class:`OverlayRefused`."""
    from codesuture.trust.sigstore_support import verify_statement_bundle
    from codesuture.trust.statement import meta_from_statement

    overlay_name = entry.name + OVERLAY_SUFFIX
    if not policy.sigstore_issuer:
        raise _refuse(entry, "Sigstore identity configured without an OIDC issuer")
    try:
        payload = verify_statement_bundle(
            bundle,
            identity=policy.sigstore_identity or "",
            issuer=policy.sigstore_issuer,
            staging=policy.sigstore_staging,
            path=entry.name + SIGSTORE_SUFFIX,
        )
        meta, subject_digest = meta_from_statement(payload, overlay_name)
    except TrustError as exc:
        raise _refuse(entry, exc.reason) from None
    if hashlib.sha256(data).hexdigest() != subject_digest:
        raise _refuse(entry, "overlay bytes do not match the signed subject digest (tampered)")
    return meta, f"sigstore:{policy.sigstore_identity}"
