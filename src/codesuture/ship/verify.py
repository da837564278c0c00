"""Verify overlays, signed folders and bundles: what ``codesuture verify`` calls.

Everything is checked exactly as the loader's strictest policy would admit it
(:func:`codesuture.trust.policy.admit` with ``require_signed`` and
``strict_statements``: under a signed set, each overlay's own envelope is verified too),
against a trust root loaded fresh. Host state is neither read nor written: this is a
review of the artifacts, not of a host. Results are data; nothing is printed.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from typing import Any, Iterable

from codesuture.errors import CodeSutureError, TrustError
from codesuture.overlay.names import OVERLAY_SUFFIX, SET_NAME, SIGSTORE_SUFFIX
from codesuture.util.clock import parse_iso_utc


@dataclass(frozen=True)
class VerifyResult:
    """One verified (or refused) file: an overlay, a bundle member, a signed set, or an
    artifact."""

    path: str
    ok: bool
    reason: str = ""
    signer: str | None = None
    module: str | None = None
    expires: str | None = None
    #: a verified overlay's patches as its signed Statement records them (site, guard,
    #: evidence: the repro proof and test runs among it)
    patches: tuple[dict[str, Any], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "ok": self.ok, "reason": self.reason, "signer": self.signer,
                "module": self.module, "expires": self.expires, "patches": list(self.patches)}


def _patches(entry: Any, admitted: Any, policy: Any, root: Any) -> tuple[dict[str, Any], ...]:
    """The signed patch records of an admitted overlay, each with its evidence."""
    from codesuture.trust.policy import full_meta

    try:
        meta = full_meta(entry, admitted, policy, root)
    except CodeSutureError:
        return ()
    return tuple({"qualname": p.qualname, "line": p.line, "offset": p.offset, "guard": p.guard.guard,
                  "exception": p.exception, "evidence": dict(p.evidence or {})} for p in meta.patches)


def _reason(exc: BaseException) -> str:
    return str(getattr(exc, "reason", None) or exc)


def verify_store(store: Any, root: Any, keys_dir: str, now: float) -> list[VerifyResult]:
    """Every overlay of *store* (directory or bundle) under the strictest policy, then
    the store's signed set (when it has one; a bundle must)."""
    from codesuture.trust.policy import LoadPolicy, admit, store_set

    policy = LoadPolicy(keys_dir, require_signed=True, strict_statements=True)
    results: list[VerifyResult] = []
    try:
        index = store.index()
    except CodeSutureError as exc:
        return [VerifyResult(store.location, False, _reason(exc))]
    entries = [e for es in index.values() for e in es]
    for entry in entries:
        try:
            a = admit(entry, policy, now, root=root)
        except CodeSutureError as exc:
            results.append(VerifyResult(entry.path(OVERLAY_SUFFIX), False, _reason(exc)))
        else:
            results.append(VerifyResult(entry.path(OVERLAY_SUFFIX), True, "", a.signer, a.meta.module, a.meta.expires,
                                        _patches(entry, a, policy, root)))
    if not entries and store.kind == "directory":
        results.append(VerifyResult(store.location, False, "no overlays found"))
    try:
        vset = store_set(store, policy, root)
    except TrustError as exc:
        return results + [VerifyResult(store.display(SET_NAME), False, exc.reason)]
    if vset is not None:
        missing = sorted(s for s in vset.overlays if s not in {e.name for e in entries})
        if missing:
            results.append(VerifyResult(store.display(SET_NAME), False, f"pins {missing[0]}{OVERLAY_SUFFIX}, which is missing"))
        elif vset.expires <= time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)):
            results.append(VerifyResult(store.display(SET_NAME), False, f"signed overlay set expired at {vset.expires}"))
        else:
            results.append(VerifyResult(store.display(SET_NAME), True,
                                        f"signed overlay set {vset.name!r} v{vset.version} of {len(vset.overlays)} overlay(s)",
                                        vset.keyid, None, vset.expires))
    return results


def verify_paths(paths: Iterable[str | os.PathLike[str]], keys_dir: str | os.PathLike[str], *,
                 now: float | None = None) -> list[VerifyResult]:
    """Verify overlays (``*.overlay`` files), folders of overlays and bundles (any other
    file) against the trust root in *keys_dir*, loaded fresh. *now*: epoch seconds for
    expiry. One result per overlay, set, or bad path; never raises for bad input."""
    from codesuture.store import Entry
    from codesuture.store.bundle import BundleStore
    from codesuture.store.directory import DirectoryStore
    from codesuture.trust.keys import TrustRoot
    from codesuture.overlay.names import parse_stem

    kd = os.fspath(keys_dir)
    try:
        root = TrustRoot.load(kd)
    except TrustError as exc:
        return [VerifyResult(str(exc.path or kd), False, f"trust root: {exc.reason}")]
    now = time.time() if now is None else now
    results: list[VerifyResult] = []
    for raw in paths:
        p = os.fspath(raw)
        if os.path.isdir(p):
            results += verify_store(DirectoryStore(p, budget=None), root, kd, now)
        elif os.path.isfile(p) and not p.endswith(OVERLAY_SUFFIX):
            results += verify_store(BundleStore(p, budget=None), root, kd, now)
        elif os.path.isfile(p):
            from codesuture.trust.policy import LoadPolicy, admit

            store = DirectoryStore(os.path.dirname(os.path.abspath(p)), budget=None)
            stem = os.path.basename(p)[: -len(OVERLAY_SUFFIX)]
            parsed = parse_stem(stem)
            if parsed is None:
                results.append(VerifyResult(p, False, "file name is not <key>.<cache_tag>.<source sha256[:16]>.overlay"))
                continue
            try:
                entry, policy = Entry(store, stem, *parsed), LoadPolicy(kd, require_signed=True, strict_statements=True)
                a = admit(entry, policy, now, root=root)
                results.append(VerifyResult(p, True, "", a.signer, a.meta.module, a.meta.expires,
                                            _patches(entry, a, policy, root)))
            except CodeSutureError as exc:
                results.append(VerifyResult(p, False, _reason(exc)))
        else:
            results.append(VerifyResult(p, False, "no such file or folder"))
    return results


def _sigstore_bundle_for(path: str) -> str | None:
    candidates = [path + SIGSTORE_SUFFIX]
    if path.endswith(OVERLAY_SUFFIX):
        candidates.append(path[: -len(OVERLAY_SUFFIX)] + SIGSTORE_SUFFIX)
    return next((c for c in candidates if os.path.isfile(c)), None)


def verify_paths_sigstore(paths: Iterable[str | os.PathLike[str]], *, identity: str, issuer: str,
                          staging: bool = False) -> list[VerifyResult]:
    """Verify files against the Sigstore bundle beside each (``<file>.sigstore.json``,
    or ``<stem>.sigstore.json`` for an overlay), offline, for certificate *identity*
    and OIDC *issuer*. A DSSE bundle must carry an in-toto Statement with a subject
    whose sha256 is the file's; for an overlay the Statement is also checked like the
    loader does (subject name, predicate, expiry). Never raises for bad input."""
    from codesuture.ship.sign import find_overlays
    from codesuture.trust import sigstore_support as ss

    results: list[VerifyResult] = []
    for raw in paths:
        p = os.fspath(raw)
        try:
            files = find_overlays([p]) if os.path.isdir(p) else [p]
        except CodeSutureError as exc:
            results.append(VerifyResult(p, False, _reason(exc)))
            continue
        for f in files:
            results.append(_verify_sigstore_file(f, identity, issuer, staging, ss))
    return results


def _verify_sigstore_file(f: str, identity: str, issuer: str, staging: bool, ss: Any) -> VerifyResult:
    from codesuture.trust.statement import meta_from_statement
    from codesuture.util.files import read_regular

    bundle_path = _sigstore_bundle_for(f)
    if bundle_path is None:
        return VerifyResult(f, False, f"no Sigstore bundle beside it ({os.path.basename(f)}{SIGSTORE_SUFFIX})")
    try:
        artifact = read_regular(f, 1 << 30)
        raw = read_regular(bundle_path, 16 * 1024 * 1024)
        if artifact is None or raw is None:
            raise TrustError("file vanished", f)
        signer = f"sigstore:{identity}"
        if ss.bundle_has_envelope(raw):
            statement = ss.verify_statement_bundle(raw, identity=identity, issuer=issuer, staging=staging, path=bundle_path)
            if f.endswith(OVERLAY_SUFFIX):
                meta, digest, _ = meta_from_statement(statement, os.path.basename(f))
                if digest != hashlib.sha256(artifact).hexdigest():
                    raise TrustError("overlay bytes do not match the signed subject digest (tampered)", f)
                if parse_iso_utc(meta.expires) <= time.time():
                    raise TrustError(f"expired at {meta.expires}", f)
                return VerifyResult(f, True, "", signer, meta.module, meta.expires)
            if not ss.statement_subject_matches(statement, artifact):
                raise TrustError("no statement subject has this file's sha256 (signature is valid, but for other bytes)", f)
        else:
            ss.verify_artifact_bundle(artifact, raw, identity=identity, issuer=issuer, staging=staging, path=bundle_path)
    except CodeSutureError as exc:
        return VerifyResult(f, False, _reason(exc))
    return VerifyResult(f, True, "", signer)


__all__ = ["VerifyResult", "verify_paths", "verify_store", "verify_paths_sigstore"]
