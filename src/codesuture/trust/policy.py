"""Load policy: which overlays may reach ``marshal.loads``.

:func:`admit` is the only door from an overlay store to the loader. It is the load
policy table of ``docs/overlay-format.md``, row for row:

====  ==========================================================  ====================================
step  check                                                       refusal (one log line; original loads)
====  ==========================================================  ====================================
1     the store's signed overlay set, when the store has one      set does not verify / older than seen or
      (always for a bundle; required by ``min_set_version``)       than min_set_version / bundle member
                                                                  not pinned / none where one must be
2     with a set: the set is unexpired and lists this overlay,     set expired / not in the signed set / a
      and the side files it pins for it are intact (checked       side file does not match the set
      once per overlay and set, when it is first admitted)
3     without a set, what vouches for the overlay: its DSSE        unsigned overlay refused (trust root or
      envelope (Ed25519, trust root); else its Sigstore bundle     require_signed in force) / bad
      (identity); else the unsigned sidecar, only when no trust    signature / untrusted key / signed into
      root, no ``require_signed``, no Sigstore identity            a set this store does not have
4     then the overlay file: a regular file of at most 16 MiB      missing / not a regular file /
      whose SHA-256 is the one vouched for                         oversized / tampered or replaced
5     revocation: overlay digest and signer in ``revoked.json``;   revoked overlay / revoked key /
      overlay digest withdrawn on this host                        withdrawn by codesuture rollback
6     expiry (the overlay's own; its set's in step 2)              expired
7     tier: only ``auto`` loads (``observe``/``propose``: never,   tier does not permit loading
      signed or not; ``codesuture sign`` approves a proposal)
8     the module is allowed (settings ``allow``/``deny``)          denied by the settings
9     canary conditions of a signed overlay select this process    skipped (one INFO line), see
      (:mod:`codesuture.trust.canary`; the loader only)          :mod:`codesuture.trust.canary`
====  ==========================================================  ====================================

The loader then checks the header's magic number, the source SHA-256 against the
module's bytes, the key and the cache tag (:mod:`codesuture.loader.resolve`), and only
then unmarshals. :func:`admit` never unmarshals.

Import cost: only the standard library and CodeSuture's light modules at import time.
``cryptography`` and ``sigstore`` are imported the first time a signature is checked.
The trust root and each store's signed set are read once per process.
"""

from __future__ import annotations

import _thread
import os
import time
from collections import namedtuple

from codesuture.errors import CodeSutureError, FileError, OverlayRefused, TrustError
from codesuture.logs import logger
from codesuture.overlay.model import OverlayMeta
from codesuture.overlay.names import (
    ENVELOPE_SUFFIX, MAX_ENVELOPE_BYTES, MAX_OVERLAY_BYTES, MAX_SET_BYTES, META_SUFFIX, OVERLAY_SUFFIX, SBOM_NAME,
    SET_NAME, SIGSTORE_SUFFIX,
)
from codesuture.util.clock import is_iso_utc, now_text
from codesuture.util.digest import sha256

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover - typing costs milliseconds on the boot path
    from typing import Any

log = logger("codesuture.trust")


class LoadPolicy(
    namedtuple(
        "_LoadPolicy",
        "keys_dir require_signed sigstore_identity sigstore_issuer sigstore_staging strict_statements "
        "state_dir min_set_version activate allow deny",
        defaults=(None, False, None, None, False, False, None, 0, False, (), ()),
    )
):
    """``keys_dir``: the trust root (public keys, ``revoked.json``), or None.
    ``require_signed``: refuse unsigned overlays even without a trust root.
    ``sigstore_identity``/``sigstore_issuer``: accept Sigstore-signed overlays whose
    certificate has this SAN identity and OIDC issuer (``sigstore_staging``: Sigstore's
    staging trust root). ``strict_statements``: also verify each overlay's own envelope
    under a signed set and validate statements with ``sigstore.dsse.Statement``
    (``codesuture verify`` does; the loader does not, for start-up cost).
    ``state_dir``: host state for rollback protection and withdrawn overlays (None:
    none kept). ``min_set_version``: refuse signed overlay sets below this version,
    and stores without one when it is above 0. ``activate``: honour canary activation
    conditions (the loader; ``verify`` and ``audit`` leave it off). ``allow``/``deny``:
    module-name patterns (``fnmatch``) whose overlays may / may never load."""

    __slots__ = ()

    @property
    def allows_unsigned(self) -> bool:
        return self.keys_dir is None and not self.require_signed and not self.sigstore_identity

    @classmethod
    def from_settings(cls, settings: Any) -> "LoadPolicy":
        """The policy of a :class:`codesuture.settings.Settings`."""
        return cls(
            settings.keys, settings.require_signed, settings.sigstore_identity, settings.sigstore_issuer,
            settings.sigstore_staging, False, settings.state_dir, settings.min_set_version, True,
            tuple(getattr(settings, "allow", ())), tuple(getattr(settings, "deny", ())),
        )

    @classmethod
    def from_env(cls, environ: "os._Environ[str] | dict[str, str] | None" = None) -> "LoadPolicy":
        """The policy the ``CODESUTURE_*`` environment describes (strictly parsed;
        raises :class:`~codesuture.errors.ConfigError`)."""
        from codesuture import settings

        return cls.from_settings(settings.load(environ=os.environ if environ is None else environ))


_ROOTS: "dict[str, Any]" = {}
_SETS: "dict[tuple[str, str, str], Any]" = {}
_LOCK = _thread.allocate_lock()  # _thread: threading costs an import at start-up


def trust_root(policy: LoadPolicy) -> Any:
    """The :class:`~codesuture.trust.keys.TrustRoot` of *policy*, loaded once per
    process per keys directory (a load failure is remembered too). Raises
    :class:`TrustError` when there is none or it is malformed."""
    if policy.keys_dir is None:
        raise TrustError("no trust root configured (--keys / CODESUTURE_KEYS)")
    path = os.fspath(policy.keys_dir)
    with _LOCK:
        cached = _ROOTS.get(path)
        if cached is None:
            from codesuture.trust.keys import TrustRoot

            try:
                cached = TrustRoot.load(path)
            except TrustError as exc:
                cached = exc
            _ROOTS[path] = cached
    if isinstance(cached, TrustError):
        raise cached
    return cached


def clear_trust_root_cache() -> None:
    """Forget loaded trust roots, verified sets and host state (after ``keys/``,
    ``revoked.json``, a store or the state changed)."""
    from codesuture.trust import state

    with _LOCK:
        _ROOTS.clear()
        _SETS.clear()
    state.clear_cache()


_STATES: dict[str, Any] = {}


def _host_state(policy: LoadPolicy) -> Any:
    """The :class:`~codesuture.trust.state.HostState` of *policy* (one per folder)."""
    if not policy.state_dir:
        return None
    found = _STATES.get(policy.state_dir)
    if found is None:
        from codesuture.trust.state import HostState

        found = _STATES[policy.state_dir] = HostState(os.fspath(policy.state_dir))
    return found


def store_set(store: Any, policy: LoadPolicy, root: Any = None) -> Any:
    """The verified signed overlay set of *store* (a
    :class:`~codesuture.trust.overlay_set.VerifiedSet`), or None when the store has
    none and may go without one. Verified once per process per store and trust root.

    Raises :class:`TrustError` naming the set file when the store has a set that does
    not verify against the trust root (or there is no trust root to verify it while
    unsigned overlays are not allowed), is older than ``min_set_version`` or than the
    newest version this host has seen for its signer and name, or (a bundle) holds a
    file the set does not pin (but its unsigned SBOM, never read) or lacks one it pins;
    and when the store has no set but must (a bundle, or ``min_set_version`` above 0).
    Expiry is checked by the caller.
    """
    ident = (store.location, os.fspath(policy.keys_dir) if policy.keys_dir else f"root:{id(root)}",
             repr(policy[1:]))  # every other setting of the policy (state, minimum, ...)
    with _LOCK:
        cached = _SETS.get(ident)
    if cached is None:
        try:
            cached = _load_set(store, policy, root)
        except TrustError as exc:
            cached = exc
        except FileError as exc:
            cached = TrustError(exc.reason, exc.path)
        with _LOCK:
            _SETS[ident] = cached
    if isinstance(cached, TrustError):
        raise cached
    return cached or None


def _load_set(store: Any, policy: LoadPolicy, root: Any) -> Any:
    where = store.display(SET_NAME)
    raw = store.read(SET_NAME, MAX_SET_BYTES)
    if raw is None:
        if store.kind == "bundle":
            raise TrustError(f"bundle has no signed overlay set ({SET_NAME})", store.location)
        if policy.min_set_version > 0:
            raise TrustError(f"store has no signed overlay set, and min_set_version is {policy.min_set_version}", where)
        return False
    if root is None and policy.keys_dir is None:
        if policy.allows_unsigned and store.kind != "bundle":  # a bundle is always verified
            return False  # a developer's machine without a trust root: nothing can be verified
        raise TrustError("signed overlay set cannot be verified: no trust root configured (--keys)", where)
    from codesuture.trust.overlay_set import verify_set

    vset = verify_set(raw, root if root is not None else trust_root(policy), where)
    if store.kind == "bundle":
        members = set(store.names()) - {SET_NAME, SBOM_NAME}  # the SBOM: unsigned, informational, never read
        extra, missing = sorted(members - set(vset.files)), sorted(set(vset.files) - members)
        if extra:
            raise TrustError(f"bundle member {extra[0]!r} is not pinned by the signed overlay set", store.location)
        if missing:
            raise TrustError(f"bundle lacks {missing[0]!r}, which the signed overlay set pins", store.location)
    if vset.version < policy.min_set_version:
        raise TrustError(f"signed overlay set {vset.name!r} version {vset.version} is below min_set_version "
                         f"{policy.min_set_version}", where)
    state = _host_state(policy)
    if state is not None:
        seen = state.seen_version(vset.keyid, vset.name)
        if vset.version < seen:
            raise TrustError(f"signed overlay set {vset.name!r} version {vset.version} is older than version {seen} "
                             f"already seen on this host (rolled back)", where)
        if vset.version > seen:
            state.record_version(vset.keyid, vset.name, vset.version)
    log.debug("signed overlay set %s: %r", where, vset)
    return vset


def pinned_problem(store: Any, vset: Any, stem: str) -> str | None:
    """Why a file the verified set *vset* pins for overlay *stem* of *store*, other than
    the overlay itself (its sidecar, its envelope), is not the signed one (missing,
    unreadable, other bytes), or None. Checked once per overlay and set, when the
    overlay is first admitted (kept in ``vset.problems``, ``""`` for intact): a start
    reads and hashes the side files of the overlays it imports, not of every overlay
    the set lists. Never raises for a bad file."""
    found = vset.problems.get(stem)
    if found is None:
        found = _side_file_problem(store, stem, vset.overlays[stem]["files"], vset) or ""
        vset.problems[stem] = found
    return found or None


def _side_file_problem(store: Any, stem: str, names: list[str], vset: Any) -> str | None:
    for fname in names:
        if fname == stem + OVERLAY_SUFFIX:
            continue
        try:
            raw = store.read(fname, MAX_ENVELOPE_BYTES)
        except CodeSutureError as exc:
            return f"{fname}: {getattr(exc, 'reason', exc)}"
        if raw is None:
            return f"{fname} is missing, but the signed overlay set pins it"
        if sha256(raw).hexdigest() != vset.files[fname]:
            return f"{fname} does not match the signed overlay set {vset.name!r} v{vset.version} (tampered or replaced)"
    return None


class Admitted(namedtuple("_Admitted", "overlay_bytes meta signer via")):
    """An overlay that passed policy: its bytes, its metadata (:class:`OverlayMeta`;
    from the signed set it carries no patch list, see :func:`full_meta`), who signed it
    (a key id, ``sigstore:<identity>``, or None when unsigned) and ``via``: ``set``,
    ``dsse``, ``sigstore`` or ``unsigned``."""

    __slots__ = ()


def _refuse(entry: Any, reason: str) -> OverlayRefused:
    return OverlayRefused(entry.name, reason)


class NotSelected(OverlayRefused):
    """Step 9: the overlay's canary conditions do not select this process. Not a
    fault: the loader logs it at INFO (``quiet``)."""

    quiet = True


#: Tiers whose overlays may load (docs/governance.md).
LOADABLE_TIERS = ("auto",)


def _module_denied(module: str, policy: LoadPolicy) -> str | None:
    """Why the settings deny overlays of *module*, or None."""
    import fnmatch

    if any(fnmatch.fnmatchcase(module, g) for g in policy.deny):
        return f"module {module} is denied by the settings (deny)"
    if policy.allow and not any(fnmatch.fnmatchcase(module, g) for g in policy.allow):
        return f"module {module} is not in the settings' allow list"
    return None


def _reason_with_file(entry: Any, exc: CodeSutureError) -> str:
    """*exc*'s reason, naming the file when it is not the overlay itself."""
    reason = str(getattr(exc, "reason", exc))
    path = getattr(exc, "path", None)
    name = os.path.basename(path.rsplit(":", 1)[-1]) if path else ""
    if name and name not in (entry.name, entry.name + OVERLAY_SUFFIX):
        return f"{name}: {reason}"
    return reason


def admit(entry: Any, policy: LoadPolicy, now: float | None = None, *, root: Any = None) -> Admitted:
    """Admit *entry* (a :class:`~codesuture.store.Entry`) under *policy*, or raise
    :class:`OverlayRefused` with the reason (see the table above).

    *now*: epoch seconds for expiry (default: the current time). *root*: a trust root
    to use instead of the per-process cached one of ``policy.keys_dir`` (``codesuture
    verify`` passes a freshly loaded one). What vouches for the overlay (its set, its
    envelope) is checked before the overlay file is read, so a planted file costs no
    read. Never unmarshals.
    """
    now = time.time() if now is None else now
    has_keys = policy.keys_dir is not None or root is not None
    activation = None
    try:
        try:  # step 1
            vset = store_set(entry.store, policy, root)
        except TrustError as exc:
            raise _refuse(entry, f"signed overlay set refused: {exc.reason}") from None
        if vset is not None:  # steps 2-3
            meta, signer, via = _admit_from_set(entry, vset, now)
            activation = vset.overlays[entry.name].get("activation")
        else:  # step 3
            envelope = entry.read(ENVELOPE_SUFFIX) if has_keys and not policy.allows_unsigned else None
            bundle = entry.read(SIGSTORE_SUFFIX) if envelope is None and policy.sigstore_identity else None
            if envelope is not None:
                meta, signer, set_name, activation = _admit_signed(entry, envelope, policy, root)
                via = "dsse"
            elif bundle is not None:
                meta, signer, set_name, activation = _admit_sigstore(entry, bundle, policy)
                via = "sigstore"
            elif policy.allows_unsigned:
                raw = entry.read(META_SUFFIX)
                if raw is None:
                    raise _refuse(entry, "metadata file is missing")
                meta, signer, set_name, via = OverlayMeta.loads(raw, entry.name + META_SUFFIX), None, None, "unsigned"
            elif not has_keys and entry.read(ENVELOPE_SUFFIX) is not None:
                raise _refuse(entry, "signed, but no trust root is configured to verify it (--keys)")
            else:
                raise _refuse(entry, "unsigned overlay refused (a trust root or --require-signed is in force)")
            if set_name is not None:
                raise _refuse(entry, f"signed as part of overlay set {set_name!r}, which this store does not have "
                                     f"(deleted or replaced?)")
        data = entry.read(OVERLAY_SUFFIX)  # step 4
        if data is None:
            raise _refuse(entry, "overlay file is missing")
    except OverlayRefused:
        raise
    except CodeSutureError as exc:
        raise _refuse(entry, _reason_with_file(entry, exc)) from None
    digest = sha256(data).hexdigest()
    if digest != meta.overlay_sha256 and via == "unsigned" and entry.store.kind == "directory":
        # a writer killed after its sidecar (the pair's commit point) left the new bytes
        # in their content-addressed copy (store/directory.py write_pair)
        try:
            pending = entry.store.pending_overlay(entry.name, meta.overlay_sha256, MAX_OVERLAY_BYTES)
        except CodeSutureError:
            pending = None
        if pending is not None and sha256(pending).hexdigest() == meta.overlay_sha256:
            data, digest = pending, meta.overlay_sha256
    if digest != meta.overlay_sha256:  # step 4
        what = {"set": f"the signed overlay set {vset.name!r} v{vset.version}" if vset is not None else "",
                "dsse": "the signed subject digest", "sigstore": "the signed subject digest",
                "unsigned": "the digest in its metadata"}[via]
        raise _refuse(entry, f"overlay bytes do not match {what} (tampered or replaced)")
    if via == "set" and policy.strict_statements and entry.name + ENVELOPE_SUFFIX in vset.overlays[entry.name]["files"]:
        envelope = entry.read(ENVELOPE_SUFFIX)
        if envelope is None:
            raise _refuse(entry, f"{entry.name + ENVELOPE_SUFFIX} is missing")
        own, _, set_name, _ = _admit_signed(entry, envelope, policy, root)
        if set_name not in (None, vset.name):
            raise _refuse(entry, f"its own statement names overlay set {set_name!r}, not {vset.name!r}")
        if own.overlay_sha256 != digest:
            raise _refuse(entry, "overlay bytes do not match the signed subject digest (tampered)")
        meta = own
    if has_keys:  # step 5
        try:
            r = root if root is not None else trust_root(policy)
        except TrustError as exc:
            raise _refuse(entry, exc.reason) from None
        if digest in r.revoked_overlays:
            raise _refuse(entry, f"revoked overlay (sha256 {digest} is in revoked.json)")
        if signer is not None and signer in r.revoked_keys:
            raise _refuse(entry, f"revoked key {signer}")
    state = _host_state(policy)
    if state is not None:
        withdrawn = state.withdrawn().get(digest)
        if withdrawn is not None:
            raise _refuse(entry, f"withdrawn by codesuture rollback at {withdrawn.get('at', '?')}")
    if meta.expires:  # step 6 (a set's times were checked when it was parsed)
        if via != "set" and not is_iso_utc(meta.expires):
            raise _refuse(entry, f"expiry {meta.expires!r} is not an RFC 3339 UTC time")
        if meta.expires <= now_text(now):
            raise _refuse(entry, f"expired at {meta.expires}")
    if meta.tier not in LOADABLE_TIERS:  # step 7 (docs/governance.md)
        raise _refuse(entry, f"tier {meta.tier!r} does not permit loading (only {', '.join(LOADABLE_TIERS)} overlays "
                             "load; signing a proposal approves it)")
    if policy.allow or policy.deny:  # step 8
        denied = _module_denied(meta.module, policy)
        if denied:
            raise _refuse(entry, denied)
    if activation is not None and policy.activate:  # step 9 (codesuture.trust.canary)
        from codesuture.trust.canary import selects

        why = selects(activation)
        if why is not None:
            raise NotSelected(entry.name, f"not activated in this process ({why})")
    if signer is None:
        log.warning("loading UNSIGNED overlay %s (no trust root configured)", entry.name)
    return Admitted(data, meta, signer, via)


def _admit_from_set(entry: Any, vset: Any, now: float) -> tuple[OverlayMeta, str, str]:
    """Steps 2-3 under a verified set: the set is unexpired, lists this overlay, and the
    side files it pins for it are intact; the metadata is the set's."""
    if vset.expires <= now_text(now):
        raise _refuse(entry, f"signed overlay set {vset.name!r} expired at {vset.expires}")
    info = vset.overlays.get(entry.name)
    if info is None:
        raise _refuse(entry, f"not in the signed overlay set {vset.name!r} v{vset.version} (withdrawn, or planted)")
    problem = pinned_problem(entry.store, vset, entry.name)
    if problem:
        raise _refuse(entry, problem)
    meta = OverlayMeta(
        module=info["module"], key=info["key"], origin="", source_sha256=info["source_sha256"],
        overlay_sha256=vset.files[entry.name + OVERLAY_SUFFIX],
        python={"cache_tag": info["cache_tag"], "magic": info["magic"]},
        created=vset.created, expires=info["expiresAt"], tier=info["tier"], patches=[], package=info.get("package"),
    )
    return meta, vset.keyid, "set"


def _admit_signed(entry: Any, envelope: bytes, policy: LoadPolicy, root: Any) -> tuple[OverlayMeta, str, str | None, Any]:
    """Verify the overlay's DSSE envelope against the trust root; return (metadata from
    the verified Statement, whose ``overlay_sha256`` is the signed subject digest,
    signer key id, the overlay set it was signed into, its canary activation
    conditions or None). The statement's subject must name this overlay file. Nothing
    in the envelope is interpreted before its signature verified."""
    from codesuture.trust import dsse
    from codesuture.trust.statement import meta_from_statement

    try:
        # Malformed bytes are refused before the trust root is loaded: a store of junk
        # never costs the import of ``cryptography`` (dsse.verify parses them again).
        dsse.Envelope.loads(envelope, entry.name + ENVELOPE_SUFFIX)
        verified = dsse.verify(envelope, root if root is not None else trust_root(policy), dsse.INTOTO_PAYLOAD_TYPE,
                               entry.name + ENVELOPE_SUFFIX)
        meta, _, set_name = meta_from_statement(verified.payload, entry.name + OVERLAY_SUFFIX,
                                                strict=policy.strict_statements)
    except TrustError as exc:
        raise _refuse(entry, exc.reason) from None
    return meta, verified.keyid, set_name, _activation(entry, verified.payload)


def _activation(entry: Any, payload: bytes) -> Any:
    """The canary conditions of a verified Statement, or None (refused when malformed)."""
    if b'"activation"' not in payload:
        return None
    from codesuture.trust.canary import from_statement

    try:
        return from_statement(payload)
    except ValueError as exc:
        raise _refuse(entry, f"statement {exc}") from None


def _admit_sigstore(entry: Any, bundle: bytes, policy: LoadPolicy) -> tuple[OverlayMeta, str, str | None, Any]:
    """Verify a Sigstore bundle (DSSE in-toto Statement) offline for the identity in
    *policy*; return (metadata, ``sigstore:<identity>``, overlay set name)."""
    from codesuture.trust.sigstore_support import verify_statement_bundle
    from codesuture.trust.statement import meta_from_statement

    if not policy.sigstore_issuer:
        raise _refuse(entry, "Sigstore identity configured without an OIDC issuer")
    try:
        payload = verify_statement_bundle(
            bundle, identity=policy.sigstore_identity or "", issuer=policy.sigstore_issuer,
            staging=policy.sigstore_staging, path=entry.name + SIGSTORE_SUFFIX,
        )
        meta, _, set_name = meta_from_statement(payload, entry.name + OVERLAY_SUFFIX)
    except TrustError as exc:
        raise _refuse(entry, exc.reason) from None
    return meta, f"sigstore:{policy.sigstore_identity}", set_name, _activation(entry, payload)


def full_meta(entry: Any, admitted: Admitted, policy: LoadPolicy, root: Any = None) -> OverlayMeta:
    """The complete metadata of an admitted overlay, patch list included, from what
    vouches for it: the Statement in its envelope (whose digest the signed set pins,
    or whose signature verifies again), its Sigstore bundle, or the sidecar of an
    unsigned overlay. Raises :class:`OverlayRefused` when that no longer holds."""
    if admitted.via == "unsigned" or admitted.meta.patches:
        return admitted.meta
    digest = admitted.meta.overlay_sha256
    if admitted.via == "sigstore":
        bundle = entry.read(SIGSTORE_SUFFIX)
        if bundle is None:
            raise _refuse(entry, f"{entry.name + SIGSTORE_SUFFIX} is missing")
        meta = _admit_sigstore(entry, bundle, policy)[0]
        if meta.overlay_sha256 != digest:
            raise _refuse(entry, "its Sigstore Statement is not the one that admitted it")
        return meta
    envelope = entry.read(ENVELOPE_SUFFIX)
    if envelope is None:
        raise _refuse(entry, f"{entry.name + ENVELOPE_SUFFIX} is missing")
    if admitted.via == "set":
        try:
            vset = store_set(entry.store, policy, root)
        except TrustError as exc:
            raise _refuse(entry, exc.reason) from None
        pinned = vset.files.get(entry.name + ENVELOPE_SUFFIX) if vset is not None else None
        if pinned != sha256(envelope).hexdigest():
            raise _refuse(entry, f"{entry.name + ENVELOPE_SUFFIX} is not the envelope the signed overlay set pins")
        from codesuture.trust.dsse import Envelope
        from codesuture.trust.statement import meta_from_statement

        try:
            return meta_from_statement(Envelope.loads(envelope).payload, entry.name + OVERLAY_SUFFIX, strict=False)[0]
        except TrustError as exc:
            raise _refuse(entry, exc.reason) from None
    meta = _admit_signed(entry, envelope, policy, root)[0]
    if meta.overlay_sha256 != digest:
        raise _refuse(entry, "its envelope is not the one that admitted it")
    return meta


__all__ = ["LoadPolicy", "Admitted", "NotSelected", "LOADABLE_TIERS", "admit", "store_set", "trust_root", "clear_trust_root_cache", "full_meta",
           "pinned_problem"]
