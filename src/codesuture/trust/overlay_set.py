"""The signed overlay set: what a signed folder or bundle is allowed to load.

``codesuture sign DIR`` writes ``DIR/overlays.manifest.dsse.json``; a bundle carries
the same file. It is a DSSE envelope (payloadType ``application/vnd.in-toto+json``,
Ed25519) over an in-toto Statement v1 whose subjects are **every file of every
overlay** in the set (overlay, metadata sidecar, envelope, Sigstore bundle) with its
SHA-256, and whose predicate (type :data:`PREDICATE_TYPE`) is::

    {"name": "inventory",                 the set's name (one per app; see sign --set-name)
     "version": 7,                        increases with every signing of the folder
     "createdAt": "<RFC 3339 UTC>", "expiresAt": "<RFC 3339 UTC>",
     "overlays": {"<stem>": {"key": ..., "module": ..., "source_sha256": ..., "cache_tag": ...,
                             "magic": ..., "expiresAt": ..., "tier": ...,
                             "patchesExpireAt": ... (optional: the earliest patch expiry),
                             "files": ["<stem>.overlay", "<stem>.json", "<stem>.dsse.json"],
                             "package": {"name": ..., "version": ...},      (optional)
                             "activation": {"percent": 30, "env": {...}}}}}  (optional, see trust.canary)

It is the truth of a store, like TUF's snapshot metadata: the loader admits only an
overlay the set lists, and only when every file the set pins for it is present with
that digest; a set that does not verify, has expired, or is older than the newest
version seen for its signer and name (see :mod:`codesuture.trust.state`) refuses the
whole store. One Ed25519 verification per store, then SHA-256 comparisons per module.
"""

from __future__ import annotations

import json
import re
TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover - typing costs milliseconds at start-up
    from typing import Any

from codesuture.errors import TrustError
from codesuture.overlay.model import package_field
from codesuture.overlay.names import OVERLAY_SUFFIX, parse_stem, split_member
from codesuture.util.clock import is_iso_utc
from codesuture.util.digest import sha256

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://codesuture.dev/attestation/overlay-set/v2"
#: Fields of each overlay entry, all strings.
OVERLAY_FIELDS = ("key", "module", "source_sha256", "cache_tag", "magic", "expiresAt", "tier")
MAX_VERSION = 2 ** 53
_HEX64 = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class VerifiedSet:
    """A signed overlay set whose signature verified: ``name``, ``version``,
    ``created``/``expires`` (RFC 3339 UTC), ``keyid`` of the signer, ``files`` (file
    name -> SHA-256 hex of every pinned file), ``overlays`` (stem -> the fields of
    :data:`OVERLAY_FIELDS` plus ``files``, a list of file names) and ``problems``."""

    __slots__ = ("name", "version", "created", "expires", "keyid", "files", "overlays", "problems")

    def __init__(self, name: str, version: int, created: str, expires: str, keyid: str,
                 files: dict[str, str], overlays: dict[str, dict[str, Any]]) -> None:
        self.name, self.version, self.created, self.expires, self.keyid = name, version, created, expires, keyid
        self.files, self.overlays = files, overlays
        #: stem -> why one of its pinned files is not the signed one, "" when intact (filled
        #: per overlay as it is admitted: :func:`codesuture.trust.policy.pinned_problem`)
        self.problems: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"VerifiedSet({self.name!r} v{self.version}, {len(self.overlays)} overlay(s), key {self.keyid[:12]})"


def valid_set_name(name: str) -> bool:
    """Set names: 1-128 characters of ``[A-Za-z0-9._-]``, starting alphanumeric."""
    return bool(_NAME.fullmatch(name))


def build_set_statement(
    name: str, version: int, created: str, expires: str, overlays: "dict[str, tuple[dict[str, Any], dict[str, bytes]]]"
) -> bytes:
    """Statement JSON bytes (UTF-8, sorted keys, compact) for set *name*, *version*.

    *overlays*: stem -> (its :data:`OVERLAY_FIELDS` and optional ``package``, {file name:
    file bytes} of every file of that overlay to pin). Raises :class:`TrustError` on a
    bad name, version or file name.
    """
    if not valid_set_name(name):
        raise TrustError(f"invalid overlay set name {name!r} (letters, digits, '.', '_', '-'; at most 128)")
    if not 1 <= version <= MAX_VERSION:
        raise TrustError(f"overlay set version {version} out of range")
    subjects: list[dict[str, Any]] = []
    entries: dict[str, dict[str, Any]] = {}
    for stem, (fields, files) in sorted(overlays.items()):
        if stem + OVERLAY_SUFFIX not in files:
            raise TrustError(f"overlay set entry {stem!r} lacks its {OVERLAY_SUFFIX} file")
        for fname, data in sorted(files.items()):
            split = split_member(fname)
            if split is None or split[0] != stem:
                raise TrustError(f"{fname!r} is not a file of overlay {stem!r}")
            subjects.append({"name": fname, "digest": {"sha256": sha256(data).hexdigest()}})
        entries[stem] = {**{f: str(fields[f]) for f in OVERLAY_FIELDS}, "files": sorted(files)}
        if fields.get("package"):  # the distribution that owns the module (see overlay.model)
            entries[stem]["package"] = dict(fields["package"])
        if fields.get("activation"):  # canary conditions (codesuture.trust.canary)
            entries[stem]["activation"] = dict(fields["activation"])
        if fields.get("patchesExpireAt"):  # the earliest patch expiry (see loader.resolve)
            entries[stem]["patchesExpireAt"] = str(fields["patchesExpireAt"])
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": subjects,
        "predicateType": PREDICATE_TYPE,
        "predicate": {"name": name, "version": version, "createdAt": created, "expiresAt": expires, "overlays": entries},
    }
    return json.dumps(statement, sort_keys=True, separators=(",", ":")).encode("utf-8")


def parse_set_statement(payload: bytes, keyid: str, where: object) -> VerifiedSet:
    """A :class:`VerifiedSet` from a verified statement. Raises :class:`TrustError`
    naming *where* when anything is missing or malformed."""
    try:
        data = json.loads(payload)
    except ValueError as exc:
        raise TrustError(f"signed overlay set is not JSON: {exc}", where) from None
    if not isinstance(data, dict) or data.get("_type") != STATEMENT_TYPE:
        raise TrustError("signed overlay set is not an in-toto Statement v1", where)
    if data.get("predicateType") != PREDICATE_TYPE:
        raise TrustError(f"signed overlay set has predicateType {data.get('predicateType')!r}, not {PREDICATE_TYPE}", where)
    pred, subjects = data.get("predicate"), data.get("subject")
    if not isinstance(pred, dict) or not isinstance(subjects, list):
        raise TrustError("signed overlay set lacks its predicate or subjects", where)
    name, version = pred.get("name"), pred.get("version")
    created, expires, overlays = pred.get("createdAt"), pred.get("expiresAt"), pred.get("overlays")
    if not isinstance(name, str) or not valid_set_name(name):
        raise TrustError(f"signed overlay set has an invalid name {name!r}", where)
    if type(version) is not int or not 1 <= version <= MAX_VERSION:
        raise TrustError(f"signed overlay set has an invalid version {version!r}", where)
    if not is_iso_utc(created) or not is_iso_utc(expires):
        raise TrustError("signed overlay set createdAt/expiresAt are not RFC 3339 UTC times", where)
    if not isinstance(overlays, dict):
        raise TrustError("signed overlay set has no overlays object", where)
    files: dict[str, str] = {}
    for s in subjects:
        fname = s.get("name") if isinstance(s, dict) else None
        digest = s.get("digest", {}).get("sha256") if isinstance(s, dict) and isinstance(s.get("digest"), dict) else None
        if not isinstance(fname, str) or not isinstance(digest, str) or not _HEX64.fullmatch(digest) or fname in files:
            raise TrustError(f"signed overlay set has a malformed or duplicate subject {fname!r}", where)
        if split_member(fname) is None:
            raise TrustError(f"signed overlay set pins {fname!r}, which is not an overlay file", where)
        files[fname] = digest
    entries: dict[str, dict[str, Any]] = {}
    listed: set[str] = set()
    for stem, info in overlays.items():
        if not isinstance(stem, str) or parse_stem(stem) is None or not isinstance(info, dict):
            raise TrustError(f"signed overlay set has a malformed entry {stem!r}", where)
        if not all(isinstance(info.get(f), str) for f in OVERLAY_FIELDS):
            raise TrustError(f"signed overlay set entry {stem!r} lacks one of {', '.join(OVERLAY_FIELDS)}", where)
        if info["expiresAt"] and not is_iso_utc(info["expiresAt"]):
            raise TrustError(f"signed overlay set entry {stem!r} expiresAt is not an RFC 3339 UTC time", where)
        names = info.get("files")
        if (not isinstance(names, list) or stem + OVERLAY_SUFFIX not in names
                or not all(isinstance(n, str) and n in files and split_member(n) == (stem, n[len(stem):]) for n in names)):
            raise TrustError(f"signed overlay set entry {stem!r} has a malformed file list", where)
        if parse_stem(stem)[0] != info["key"]:  # type: ignore[index]
            raise TrustError(f"signed overlay set entry {stem!r} names key {info['key']!r}", where)
        try:
            package = package_field(info.get("package"))
        except ValueError:
            raise TrustError(f"signed overlay set entry {stem!r} has a malformed package", where) from None
        listed.update(names)
        entries[stem] = {**{f: info[f] for f in OVERLAY_FIELDS}, "files": list(names)}
        if package is not None:
            entries[stem]["package"] = package
        first = info.get("patchesExpireAt")
        if first is not None:
            if not isinstance(first, str) or not is_iso_utc(first):
                raise TrustError(f"signed overlay set entry {stem!r} patchesExpireAt is not an RFC 3339 UTC time", where)
            entries[stem]["patchesExpireAt"] = first
        if info.get("activation") is not None:
            from codesuture.trust.canary import check

            try:
                entries[stem]["activation"] = check(info["activation"])
            except ValueError as exc:
                raise TrustError(f"signed overlay set entry {stem!r}: {exc}", where) from None
    if listed != set(files):
        raise TrustError("signed overlay set subjects and overlay file lists disagree", where)
    return VerifiedSet(name, version, str(created), str(expires), keyid, files, entries)


def verify_set(raw: bytes, root: Any, where: object) -> VerifiedSet:
    """Verify the envelope *raw* against trust root *root* and parse the set. Raises
    :class:`TrustError` naming *where*."""
    from codesuture.trust import dsse

    verified = dsse.verify(raw, root, dsse.INTOTO_PAYLOAD_TYPE, where)
    return parse_set_statement(verified.payload, verified.keyid, where)


def unverified_version(raw: bytes | None) -> int:
    """The ``version`` in an existing set's payload, *without* verifying it (``sign``
    uses it only to pick a higher one), or 0 when unreadable."""
    if not raw:
        return 0
    try:
        from codesuture.trust.dsse import Envelope

        version = json.loads(Envelope.loads(raw).payload)["predicate"]["version"]
    except Exception:  # noqa: BLE001 - any malformed input means "no usable version"
        return 0
    return version if type(version) is int and 0 < version <= MAX_VERSION else 0


__all__ = ["PREDICATE_TYPE", "VerifiedSet", "build_set_statement", "parse_set_statement", "verify_set",
           "unverified_version", "valid_set_name", "OVERLAY_FIELDS"]
