"""Sign overlays: what ``codesuture sign`` calls.

A signature attests what review shows (design rule 11). Before an overlay is signed
it is **rebuilt** from its module's source (found from the recorded portable origin:
``--app-root`` for ``app:`` origins, the rebuilding interpreter's site-packages for
installed modules) and its recorded patches, on the interpreter it was built for
(:mod:`codesuture.ship.rebuild`); any byte difference refuses it. So an overlay whose
code does something its metadata does not say (code planted behind a copied sidecar)
is never signed, and the Statement a reviewer reads is the truth about the bytes.

* :func:`sign_folder`: all or nothing. Every overlay of the folder is checked first;
  only when all pass does each get ``<stem>.dsse.json`` (an in-toto Statement that
  names the folder's set), and the folder its signed overlay set
  ``overlays.manifest.dsse.json`` (:mod:`codesuture.trust.overlay_set`) with the next
  version number, pinning every file of every overlay.
* :func:`sign_file`: one overlay's envelope, outside any set.
* :func:`sign_sigstore`: the same Statements signed keyless (``<stem>.sigstore.json``).

An overlay withdrawn on this host (``codesuture rollback``) is never signed again.
Tiers (``docs/governance.md``): signing a *proposal* (tier ``propose``, as the healer
writes into the pending directory) approves it: its sidecar, Statement and set entry
say ``auto`` from then on, the only tier the loader loads. An ``observe`` overlay (an
automatic rollback's record for review) is never signed. ``SignOptions.activation``:
canary conditions (:mod:`codesuture.trust.canary`) written into each Statement and
set entry. Results are data (:class:`SignResult`); nothing is printed.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from codesuture.errors import CodeSutureError, TrustError
from codesuture.logs import logger
from codesuture.overlay.model import OverlayMeta
from codesuture.overlay.names import (
    ENVELOPE_SUFFIX, MAX_META_BYTES, MAX_OVERLAY_BYTES, MAX_SET_BYTES, META_SUFFIX, OVERLAY_SUFFIX, SET_NAME, SIGSTORE_SUFFIX,
    parse_stem,
)
from codesuture.util.clock import iso_utc
from codesuture.util.files import atomic_write, locked, read_regular, remove_stale_temps

log = logger("codesuture.trust")


@dataclass(frozen=True)
class SignResult:
    """One file signed (``output`` written) or not (``reason``)."""

    overlay: str
    ok: bool
    output: str | None = None
    signer: str | None = None
    reason: str = ""


@dataclass(frozen=True)
class SignOptions:
    """``ttl_seconds``: attestation lifetime (None: the metadata's expiry, else 30
    days). ``set_name``: the folder's set name (None: from the app root). ``app_root``:
    where ``app:`` origins are (None: the nearest pyproject.toml above the folder, else
    the current directory). ``pythons``: interpreters to rebuild other Pythons'
    overlays with. ``state_dir``: host state (withdrawn overlays; the set versions this
    host signed or saw). ``now``: epoch seconds. ``set_version``: the folder's set
    version (default: one above the existing set's and above what the host recorded).
    ``activation``: canary activation conditions for every overlay signed
    (:func:`codesuture.trust.canary.options`), or None. ``require_evidence``: refuse
    an overlay with a patch that lacks a passing repro proof whose test checks out
    (:func:`evidence_problem`); the Statement then carries what was checked."""

    ttl_seconds: float | None = None
    set_name: str | None = None
    app_root: str | None = None
    pythons: tuple[str, ...] = ()
    state_dir: str | None = None
    now: float | None = None
    set_version: int | None = None
    activation: dict[str, Any] | None = None
    require_evidence: bool = False


def find_overlays(paths: Iterable[str | os.PathLike[str]]) -> list[str]:
    """Overlay files named by *paths*: ``*.overlay`` files as given, and every
    ``*.overlay`` directly inside a folder. Raises :class:`TrustError` for a path that
    is neither (or does not exist)."""
    out: list[str] = []
    for raw in paths:
        p = os.fspath(raw)
        if os.path.isdir(p):
            # every name that claims to be an overlay: one that is not a regular file
            # (FIFO, folder, link out) fails its checks instead of being skipped
            out.extend(sorted(os.path.join(p, n) for n in os.listdir(p) if n.endswith(OVERLAY_SUFFIX)))
        elif os.path.isfile(p) and p.endswith(OVERLAY_SUFFIX):
            out.append(p)
        elif not os.path.exists(p):
            raise TrustError("no such file or folder", p)
        else:
            raise TrustError(f"not an overlay ({OVERLAY_SUFFIX}) or a folder of overlays", p)
    return out


def _stem(overlay: str) -> str:
    return os.path.basename(overlay)[: -len(OVERLAY_SUFFIX)]


def _sibling(overlay: str, suffix: str) -> str:
    return os.path.join(os.path.dirname(overlay), _stem(overlay) + suffix)


def read_unsigned(overlay: str) -> tuple[bytes, bytes, OverlayMeta]:
    """``(overlay bytes, sidecar bytes, metadata)`` of an overlay to sign. Raises
    :class:`CodeSutureError` naming the file (missing, not regular, oversized,
    malformed, or bytes that do not match the sidecar's digest)."""
    data = read_regular(overlay, MAX_OVERLAY_BYTES)
    if data is None:
        raise TrustError("overlay file is missing", overlay)
    meta_path = _sibling(overlay, META_SUFFIX)
    raw = read_regular(meta_path, MAX_META_BYTES)
    if raw is None:
        raise TrustError("metadata sidecar is missing", meta_path)
    meta = OverlayMeta.loads(raw, meta_path)
    if parse_stem(_stem(overlay)) is None:
        raise TrustError("file name is not <key>.<cache_tag>.<source sha256[:16]>.overlay", overlay)
    key, tag, prefix = parse_stem(_stem(overlay))  # type: ignore[misc]
    if (meta.key, meta.python.get("cache_tag"), meta.source_sha256[:16]) != (key, tag, prefix):
        raise TrustError("metadata does not describe this file (key, cache tag or source digest differ)", meta_path)
    if hashlib.sha256(data).hexdigest() != meta.overlay_sha256.lower():
        raise TrustError("overlay bytes do not match the digest in their metadata", overlay)
    return data, raw, meta


def check_rebuild(overlay: str, data: bytes, meta: OverlayMeta, app_root: str | None, pythons: Sequence[str]) -> None:
    """Rebuild *overlay* from its source and recorded patches; raise
    :class:`TrustError` naming it on any byte difference (or when it cannot be
    rebuilt: source or interpreter not found)."""
    from codesuture.ship.rebuild import rebuild_bytes

    if not meta.patches:
        raise TrustError("records no patches: nothing to attest", overlay)
    try:
        rebuilt = rebuild_bytes(meta.origin, app_root, meta.source_sha256, meta.patches,
                                meta.python.get("cache_tag", ""), pythons)
    except TrustError as exc:
        raise TrustError(f"cannot rebuild it to check it: {exc.reason}", overlay) from None
    if rebuilt != data:
        raise TrustError(
            f"rebuilding it from {meta.origin} and its {len(meta.patches)} recorded patch(es) gives different bytes: "
            "its code is not what its metadata says (not signed)", overlay)


def _withdrawn(options: SignOptions) -> dict[str, Any]:
    if not options.state_dir:
        return {}
    from codesuture.trust.state import HostState

    return HostState(options.state_dir).withdrawn()


def _app_root(directory: str, options: SignOptions) -> str:
    if options.app_root:
        return os.path.abspath(options.app_root)
    from codesuture.store.app_root import recorded

    found = recorded(directory)  # the app root the heal recorded in the store
    if found is not None:
        return found
    from codesuture.settings import find_app_root

    root = find_app_root(os.path.dirname(os.path.abspath(directory)))
    return root


def default_set_name(app_root: str) -> str:
    """The set name for an app: ``[project] name`` of its pyproject.toml, else the app
    root's folder name (reduced to ``[A-Za-z0-9._-]``)."""
    name = ""
    pyproject = os.path.join(app_root, "pyproject.toml")
    if os.path.isfile(pyproject):
        import tomllib

        try:
            with open(pyproject, "rb") as fh:
                name = str(tomllib.load(fh).get("project", {}).get("name", ""))
        except (OSError, tomllib.TOMLDecodeError):
            name = ""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", name or os.path.basename(app_root.rstrip(os.sep))).strip("-._")
    return name[:128] or "overlays"


def write_envelope(overlay: str, data: bytes, sidecar: bytes, meta: OverlayMeta, private_key: Any, *,
                   ttl_seconds: float | None = None, now: float | None = None,
                   set_name: str | None = None,
                   activation: dict[str, Any] | None = None) -> tuple[SignResult, tuple[dict[str, Any], dict[str, bytes]]]:
    """Write ``<stem>.dsse.json`` for *overlay* (its bytes *data*, sidecar bytes and
    metadata) without any check beyond the digest: the low half of signing. Returns
    the result and the overlay's set member ``(fields, {file name: bytes})``.
    *activation*: canary conditions for the Statement and the set entry."""
    from codesuture.trust import dsse
    from codesuture.trust.statement import build_statement, meta_from_statement

    statement = build_statement(meta, os.path.basename(overlay), data, ttl_seconds, now=now, overlay_set=set_name)
    if activation:
        from codesuture.trust.canary import check, with_activation

        activation = check(dict(activation))
        statement = with_activation(statement, activation)
    envelope = dsse.sign(statement, dsse.INTOTO_PAYLOAD_TYPE, private_key).dumps()
    out = atomic_write(_sibling(overlay, ENVELOPE_SUFFIX), envelope)
    signed_meta = meta_from_statement(statement, os.path.basename(overlay), strict=False)[0]
    kid = dsse.Envelope.loads(envelope).signatures[0].keyid
    log.info("signed %s with key %s -> %s", overlay, kid, out)
    fields: dict[str, Any] = {
        "key": meta.key, "module": meta.module, "source_sha256": meta.source_sha256,
        "cache_tag": meta.python.get("cache_tag", ""), "magic": meta.python.get("magic", ""),
        "expiresAt": signed_meta.expires, "tier": meta.tier,
    }
    if meta.package:  # the set carries it too, so the loader can compare without the Statement
        fields["package"] = dict(meta.package)
    if activation:  # and the canary conditions, so the loader need not read the Statement
        fields["activation"] = dict(activation)
    first = min((p.expires for p in meta.patches if p.expires), default="")
    if first:  # the loader reads the Statement's patch list only once a patch may have expired
        fields["patchesExpireAt"] = first
    stem = _stem(overlay)
    files = {stem + OVERLAY_SUFFIX: data, stem + META_SUFFIX: sidecar, stem + ENVELOPE_SUFFIX: envelope}
    return SignResult(overlay, True, out, kid), (fields, files)


def write_set(directory: str, members: dict[str, tuple[dict[str, Any], dict[str, bytes]]], private_key: Any,
              name: str, *, now: float | None = None, expires: str | None = None, state_dir: str | None = None,
              version: int | None = None) -> SignResult:
    """Write the signed overlay set of *directory* over *members* (stem -> set member).

    Its version is *version*, else one above both the existing set's and the highest
    this host recorded for this key and name (*state_dir*, where the new version is
    recorded too): a deleted set never restarts the count. *expires*: default the
    latest expiry of its overlays (30 days when it has none). Raises
    :class:`TrustError` when an existing set cannot be read (pass *version*) or
    *version* is not above what was seen; ``OSError`` when it cannot be written."""
    from codesuture.trust import dsse
    from codesuture.trust.keys import keyid
    from codesuture.trust.overlay_set import MAX_VERSION, build_set_statement, unverified_version

    now = time.time() if now is None else now
    set_path = os.path.join(directory, SET_NAME)
    kid = keyid(private_key.public_key())
    state = None
    if state_dir:
        from codesuture.trust.state import HostState

        state = HostState(state_dir)
    with locked(os.path.join(directory, ".set.lock")):  # one signer at a time; a killed one's temp file goes
        remove_stale_temps(directory, SET_NAME)
        try:
            previous = read_regular(set_path, MAX_SET_BYTES)
        except CodeSutureError as exc:
            previous, unreadable = None, str(getattr(exc, "reason", exc))
        else:
            unreadable = "" if previous is None or unverified_version(previous) else "no version in it"
        if unreadable and version is None:
            raise TrustError(f"the existing signed set cannot be read ({unreadable}): give --set-version N above the "
                             "last version deployed", set_path)
        floor = max(unverified_version(previous), state.seen_version(kid, name) if state else 0)
        if version is None:
            version = floor + 1
        elif not floor < version <= MAX_VERSION:
            raise TrustError(f"--set-version {version} must be above {floor} (the version already signed or seen)",
                             set_path)
        if expires is None:
            expiries = [fields["expiresAt"] for fields, _ in members.values()]
            expires = max(expiries) if expiries else iso_utc(now + 30 * 86400)
        statement = build_set_statement(name, version, iso_utc(now), expires, members)
        envelope = dsse.sign(statement, dsse.INTOTO_PAYLOAD_TYPE, private_key)
        atomic_write(set_path, envelope.dumps())
    if state is not None:
        state.record_version(kid, name, version)
    return SignResult(set_path, True, set_path, kid, f"signed overlay set {name!r} v{version}: {len(members)} overlay(s)")


#: Largest repro test file ``sign --require-evidence`` reads to check a proof.
MAX_TEST_BYTES = 32 * 1024 * 1024


def evidence_problem(meta: OverlayMeta, data: bytes, overlay: str | None = None) -> str | None:
    """Why *meta*'s patches lack the evidence ``sign --require-evidence`` asks for, or
    None: every patch needs ``evidence["proof"]`` (``codesuture repro --prove``) that
    passed, made with these overlay bytes on this overlay's interpreter, whose test
    still exists where the proof says (``test_path``, relative to the folder of
    *overlay*), has the SHA-256 the proof recorded and is the repro test of this very
    function (:func:`proof_check`); and a recorded run of the app's tests
    (``evidence["tests"]``, ``codesuture prove --tests``), when there is one, must have
    found no regression. A proof written by hand (no test, a made-up digest) fails."""
    digest = hashlib.sha256(data).hexdigest()
    for p in meta.patches:
        where = f"patch {p.qualname} (line {p.line}, {p.guard.guard})"
        evidence = p.evidence or {}
        proof = evidence.get("proof")
        if not isinstance(proof, dict):
            return f"{where} has no repro proof (run codesuture repro --prove; --require-evidence)"
        if proof.get("passed") is not True:
            return (f"{where}: its repro proof did not pass (without the overlay: {proof.get('without')}; with it: "
                    f"{proof.get('with')})")
        if proof.get("overlay_sha256") != digest:
            return f"{where}: its repro proof was made with other overlay bytes (prove it again)"
        interp = proof.get("interpreter")
        tag = interp.get("cache_tag") if isinstance(interp, dict) else None
        if tag != meta.python.get("cache_tag"):
            return f"{where}: its repro proof ran on {tag}, not on {meta.python.get('cache_tag')}"
        if overlay is not None:
            checked = proof_check(p.qualname, proof, os.path.dirname(os.path.abspath(overlay)))
            if isinstance(checked, str):
                return f"{where}: {checked}"
        tests = evidence.get("tests")
        if isinstance(tests, dict) and (tests.get("regressions") or tests.get("regressed")):
            listed = "; ".join(map(str, tests.get("regressions") or []))[:300]
            return f"{where}: the app's tests regressed with the overlays ({listed})"
    return None


def proof_check(qualname: str, proof: dict[str, Any], store: str) -> dict[str, Any] | str:
    """Check a repro proof against the test it names: ``test_path`` (relative to the
    folder *store*, inside or beside it) must be an existing regular file (at most
    :data:`MAX_TEST_BYTES`) whose SHA-256 is the proof's ``test_sha256`` and which is
    the repro test of *qualname* (``codesuture repro`` writes ``QUALNAME = '...'``).
    Returns what was checked (``{"test_path", "test_sha256", "checks", "checkedAt"}``,
    for the signed Statement) or why the proof cannot be accepted."""
    from codesuture.errors import FileError

    rel = proof.get("test_path")
    want = proof.get("test_sha256")
    if not isinstance(rel, str) or not rel or os.path.isabs(rel):
        return "its repro proof names no test file (made by hand, or by an older repro --prove: prove it again)"
    if not isinstance(want, str) or not re.fullmatch(r"[0-9a-f]{64}", want):
        return "its repro proof has no valid test SHA-256 (prove it again)"
    path = os.path.normpath(os.path.join(store, rel))
    try:
        raw = read_regular(path, MAX_TEST_BYTES)
    except FileError as exc:
        return f"its repro test {rel} cannot be read ({exc.reason})"
    if raw is None:
        return (f"its repro test {rel} does not exist (keep the tests where repro --prove wrote them, or prove "
                "again)")
    got = hashlib.sha256(raw).hexdigest()
    if got != want:
        return f"its repro test {rel} does not match the proof (SHA-256 {got[:16]}..., proof says {want[:16]}...)"
    if f"QUALNAME = {qualname!r}".encode("utf-8") not in raw:
        return f"its repro test {rel} is not a repro test of {qualname}"
    return {"test_path": rel, "test_sha256": got, "checkedAt": iso_utc(time.time()),
            "checks": ["test file exists", "SHA-256 matches the proof", f"repro test of {qualname}"]}


def _checked(overlay: str, options: SignOptions, app_root: str | None) -> tuple[bytes, bytes, OverlayMeta]:
    """Everything signing *overlay* needs, after its checks (readable, not withdrawn
    here, rebuilds to the same bytes). Raises CodeSutureError naming the file."""
    data, sidecar, meta = read_unsigned(overlay)
    if options.require_evidence:
        problem = evidence_problem(meta, data, overlay)
        if problem:
            raise TrustError(problem + ": not signed", overlay)
    if meta.tier not in ("auto", "propose"):
        raise TrustError(f"tier {meta.tier!r}: recorded for review only (an automatic rollback, or an observed "
                         "crash), never signed; heal the crash again or remove it", overlay)
    marked = [f"{p.qualname}: {p.evidence['review']}" for p in meta.patches if (p.evidence or {}).get("review")]
    if marked:
        raise TrustError(f"holds a patch marked for review ({'; '.join(marked)}): take it out with codesuture "
                         "rollback --function, or heal again", overlay)
    if hashlib.sha256(data).hexdigest() in _withdrawn(options):
        raise TrustError("was withdrawn with codesuture rollback on this host: not signed again", overlay)
    check_rebuild(overlay, data, meta, app_root, options.pythons)
    return data, sidecar, meta


def _approve(overlay: str, sidecar: bytes, meta: OverlayMeta, options: SignOptions) -> tuple[bytes, OverlayMeta]:
    """Signing approves a proposal: a ``propose`` overlay's sidecar is rewritten with
    tier ``auto`` (the overlay bytes do not change), and its Statement says so. With
    ``require_evidence``, each patch's ``evidence["proofChecked"]`` records what
    signing checked of its proof (:func:`proof_check`), so the Statement carries it."""
    changed = False
    if options.require_evidence:
        store = os.path.dirname(os.path.abspath(overlay))
        patches = []
        for p in meta.patches:
            proof = (p.evidence or {}).get("proof")
            checked = proof_check(p.qualname, proof, store) if isinstance(proof, dict) else None
            if isinstance(checked, str):  # changed since _checked: refuse rather than sign unchecked
                raise TrustError(f"patch {p.qualname}: {checked}: not signed", overlay)
            patches.append(p._replace(evidence={**dict(p.evidence or {}), "proofChecked": checked}))
        meta, changed = meta._replace(patches=patches), True
    if meta.tier == "propose":
        meta, changed = meta._replace(tier="auto"), True
        log.info("approved proposal %s (tier propose -> auto)", overlay)
    if not changed:
        return sidecar, meta
    sidecar = meta.dumps()
    atomic_write(_sibling(overlay, META_SUFFIX), sidecar)
    return sidecar, meta


def sign_file(overlay: str, private_key: Any, options: SignOptions = SignOptions()) -> SignResult:
    """Sign one overlay outside any set (``<stem>.dsse.json``). Raises
    :class:`CodeSutureError` naming the file when it cannot be signed."""
    directory = os.path.dirname(os.path.abspath(overlay))
    data, sidecar, meta = _checked(overlay, options, _app_root(directory, options))
    sidecar, meta = _approve(overlay, sidecar, meta, options)
    result, _ = write_envelope(overlay, data, sidecar, meta, private_key, ttl_seconds=options.ttl_seconds,
                               now=options.now, activation=options.activation)
    if os.path.lexists(os.path.join(directory, SET_NAME)):
        log.warning("%s has a signed overlay set, which no longer matches %s: sign the folder to update it",
                    directory, os.path.basename(overlay))
    return result


def sign_folder(directory: str, private_key: Any, options: SignOptions = SignOptions()) -> list[SignResult]:
    """Sign every overlay in *directory*, then its signed overlay set (next version).

    All or nothing: every overlay is checked first (:func:`_checked`); when one fails,
    nothing is written (the folder keeps its previous signatures and set) and the
    results say which failed and why. One result per overlay, plus one for the set."""
    app_root = _app_root(directory, options)
    set_name = options.set_name or default_set_name(app_root)
    checked: list[tuple[str, tuple[bytes, bytes, OverlayMeta]]] = []
    failed: list[SignResult] = []
    for overlay in find_overlays([directory]):
        try:
            checked.append((overlay, _checked(overlay, options, app_root)))
        except CodeSutureError as exc:
            failed.append(SignResult(overlay, False, reason=str(getattr(exc, "reason", exc))))
    set_path = os.path.join(directory, SET_NAME)
    if failed:
        return failed + [SignResult(set_path, False, reason=f"nothing signed: {len(failed)} overlay(s) failed their "
                                                            "checks (fix or roll them back, then sign again)")]
    results: list[SignResult] = []
    members: dict[str, tuple[dict[str, Any], dict[str, bytes]]] = {}
    try:
        for overlay, (data, sidecar, meta) in checked:
            sidecar, meta = _approve(overlay, sidecar, meta, options)
            result, member = write_envelope(overlay, data, sidecar, meta, private_key, ttl_seconds=options.ttl_seconds,
                                            now=options.now, set_name=set_name, activation=options.activation)
            results.append(result)
            members[_stem(overlay)] = member
        results.append(write_set(directory, members, private_key, set_name, now=options.now,
                                 state_dir=options.state_dir, version=options.set_version))
    except (CodeSutureError, OSError) as exc:
        results.append(SignResult(set_path, False, reason=str(getattr(exc, "reason", exc))))
    return results


def sign_paths(paths: Iterable[str | os.PathLike[str]], private_key: Any, options: SignOptions = SignOptions()) -> list[SignResult]:
    """Sign every folder (:func:`sign_folder`) and overlay file (:func:`sign_file`)
    named by *paths*; one result per overlay and set, or per bad path."""
    results: list[SignResult] = []
    for raw in paths:
        p = os.fspath(raw)
        if os.path.isdir(p):
            results += sign_folder(p, private_key, options)
            continue
        try:
            for overlay in find_overlays([p]):
                results.append(sign_file(overlay, private_key, options))
        except CodeSutureError as exc:
            results.append(SignResult(p, False, reason=str(getattr(exc, "reason", exc))))
    return results


def sign_sigstore(
    paths: Iterable[str | os.PathLike[str]],
    *,
    identity_token: str | None = None,
    options: SignOptions = SignOptions(),
    staging: bool = False,
    context: Any = None,
) -> list[SignResult]:
    """Sign overlays keyless with Sigstore; write ``<stem>.sigstore.json`` (a Sigstore
    bundle with a DSSE envelope over the same in-toto Statement), after the same
    rebuild check. Needs the network and an OIDC token (*identity_token*, else an
    ambient credential). *context*: a ``sigstore.sign.SigningContext`` (default:
    production or staging). Raises :class:`TrustError` when no identity or no signing
    service is available; per-overlay failures are in the results."""
    from codesuture.trust import sigstore_support as ss
    from codesuture.trust.statement import build_statement

    token = ss.identity_token(identity_token)
    ctx = context if context is not None else ss.signing_context(staging)
    results: list[SignResult] = []
    for raw in paths:
        try:
            overlays = find_overlays([raw])
        except CodeSutureError as exc:
            results.append(SignResult(os.fspath(raw), False, reason=str(getattr(exc, "reason", exc))))
            continue
        for overlay in overlays:
            try:
                data, sidecar, meta = _checked(overlay, options, _app_root(os.path.dirname(os.path.abspath(overlay)), options))
                sidecar, meta = _approve(overlay, sidecar, meta, options)
                statement = build_statement(meta, os.path.basename(overlay), data, options.ttl_seconds, now=options.now)
                if options.activation:
                    from codesuture.trust.canary import with_activation

                    statement = with_activation(statement, options.activation)
                out = atomic_write(_sibling(overlay, SIGSTORE_SUFFIX), ss.sign_statement(statement, token, ctx))
                results.append(SignResult(overlay, True, out, f"sigstore:{getattr(token, 'identity', '?')}"))
            except CodeSutureError as exc:
                results.append(SignResult(overlay, False, reason=str(getattr(exc, "reason", exc))))
    return results


__all__ = ["SignResult", "SignOptions", "sign_paths", "sign_folder", "sign_file", "sign_sigstore", "find_overlays",
           "read_unsigned", "check_rebuild", "default_set_name", "write_envelope", "write_set", "evidence_problem",
           "proof_check"]
