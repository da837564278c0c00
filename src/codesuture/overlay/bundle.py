"""Deploy bundles: one zip file holding signed overlays and a signed manifest.

Layout (flat, no folders)::

    codesuture-bundle.dsse.json     DSSE envelope (payloadType MANIFEST_PAYLOAD_TYPE) over the manifest
    <stem>.overlay                  overlay bytes
    <stem>.json                     metadata sidecar (optional)
    <stem>.dsse.json                the overlay's own DSSE envelope (or <stem>.sigstore.json)

Manifest (the envelope's payload, JSON)::

    {"_type": "https://codesuture.dev/bundle/v1", "createdAt": "<RFC 3339 UTC>",
     "overlays": ["<stem>", ...], "members": {"<member name>": "<sha256 hex>", ...}}

A bundle is always verified: :class:`BundleStore` refuses it (``BundleError`` naming the
file and the reason) unless the manifest envelope verifies against the trust root and
the zip holds exactly the manifest's members, each a regular file with a safe flat name
(no ``..``, no absolute path, no folder), no duplicates, no links/devices/FIFOs, no
encryption, each under its size cap (checked from the directory before reading, and
again while reading). Each member's SHA-256 is compared with the manifest when it is
read; each overlay is then admitted by :func:`codesuture.trust.policy.admit` on its own
signature, like any overlay. Zip files have no hard-link entries; any member whose mode
says it is not a regular file is refused.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import stat
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from codesuture.logs import logger
from codesuture.errors import BundleError, CodeSutureError, OverlayError, TrustError
from codesuture.overlay.format import MAX_OVERLAY_BYTES
from codesuture.overlay.store import (
    ENVELOPE_SUFFIX,
    MAX_ENVELOPE_BYTES,
    MAX_META_BYTES,
    META_SUFFIX,
    OVERLAY_SUFFIX,
    SIGSTORE_SUFFIX,
    atomic_write,
    parse_stem,
)
from codesuture.patch.spec import iso_utc

if TYPE_CHECKING:  # pragma: no cover
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from codesuture.trust.keys import TrustRoot
    from codesuture.trust.policy import Admitted, LoadPolicy

log = logger("codesuture.bundle")

BUNDLE_FORMAT = "https://codesuture.dev/bundle/v1"
MANIFEST_NAME = "codesuture-bundle.dsse.json"
MANIFEST_PAYLOAD_TYPE = "application/vnd.codesuture.bundle-manifest+json"
#: Caps: members in one bundle, the bundle file (bytes).
MAX_MEMBERS = 4096
MAX_BUNDLE_BYTES = 1024 * 1024 * 1024
#: Member suffixes, longest first (``.dsse.json`` also ends with ``.json``).
MEMBER_SUFFIXES = (ENVELOPE_SUFFIX, SIGSTORE_SUFFIX, OVERLAY_SUFFIX, META_SUFFIX)
_LIMITS = {
    OVERLAY_SUFFIX: MAX_OVERLAY_BYTES,
    META_SUFFIX: MAX_META_BYTES,
    ENVELOPE_SUFFIX: MAX_ENVELOPE_BYTES,
    SIGSTORE_SUFFIX: MAX_ENVELOPE_BYTES,
}
_HEX64 = re.compile(r"[0-9a-f]{64}")
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)


def split_member(name: str) -> tuple[str, str] | None:
    """``(stem, suffix)`` of a member name, or None when it is not an overlay member."""
    for suffix in MEMBER_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            stem = name[: -len(suffix)]
            return (stem, suffix) if parse_stem(stem) else None
    return None


def member_limit(name: str) -> int:
    """Size cap (bytes) of member *name*."""
    if name == MANIFEST_NAME:
        return MAX_ENVELOPE_BYTES
    split = split_member(name)
    return _LIMITS[split[1]] if split else 0


# ---------------------------------------------------------------------------- create


@dataclass(frozen=True)
class BundleInfo:
    """A created bundle: where, which overlay stems, member digests, signing key id."""

    path: Path
    stems: tuple[str, ...]
    members: dict[str, str]
    keyid: str


def create_bundle(
    directory: str | os.PathLike[str],
    output: str | os.PathLike[str],
    private_key: "Ed25519PrivateKey",
    *,
    now: float | None = None,
) -> BundleInfo:
    """Bundle every signed overlay of *directory* into zip file *output*, written
    atomically, with a manifest signed by *private_key* (DSSE v1, Ed25519).

    Every ``<stem>.overlay`` must have a ``<stem>.dsse.json`` or ``<stem>.sigstore.json``
    (run ``codesuture sign`` first). Raises :class:`BundleError` naming the file.
    """
    from codesuture.trust import dsse

    src = Path(directory)
    if not src.is_dir():
        raise BundleError("not a directory of overlays", src)
    names = sorted(os.listdir(src))
    stems = [n[: -len(OVERLAY_SUFFIX)] for n in names if n.endswith(OVERLAY_SUFFIX) and parse_stem(n[: -len(OVERLAY_SUFFIX)])]
    if not stems:
        raise BundleError("no overlays to bundle", src)
    members: dict[str, bytes] = {}
    for stem in stems:
        if not (src / (stem + ENVELOPE_SUFFIX)).is_file() and not (src / (stem + SIGSTORE_SUFFIX)).is_file():
            raise BundleError("overlay is not signed (run 'codesuture sign' first)", src / (stem + OVERLAY_SUFFIX))
        for suffix in (OVERLAY_SUFFIX, META_SUFFIX, ENVELOPE_SUFFIX, SIGSTORE_SUFFIX):
            p = src / (stem + suffix)
            if p.is_symlink() or (p.exists() and not p.is_file()):
                raise BundleError("not a regular file", p)
            if not p.exists():
                continue
            data = p.read_bytes()
            if len(data) > _LIMITS[suffix]:
                raise BundleError(f"oversized ({len(data)} bytes > {_LIMITS[suffix]})", p)
            members[p.name] = data
    manifest = {
        "_type": BUNDLE_FORMAT,
        "createdAt": iso_utc(time.time() if now is None else now),
        "overlays": stems,
        "members": {name: hashlib.sha256(data).hexdigest() for name, data in sorted(members.items())},
    }
    payload = json.dumps(manifest, sort_keys=True, indent=2).encode("utf-8")
    envelope = dsse.sign(payload, MANIFEST_PAYLOAD_TYPE, private_key)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in [(MANIFEST_NAME, envelope.dumps()), *sorted(members.items())]:
            info = zipfile.ZipInfo(name, _FIXED_TIME)
            info.create_system = 3
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    out = atomic_write(Path(output), buf.getvalue())
    kid = envelope.signatures[0].keyid
    log.info("bundled %d overlay(s) into %s (manifest key %s)", len(stems), out, kid)
    return BundleInfo(out, tuple(stems), dict(manifest["members"]), kid)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- read


@dataclass(frozen=True)
class Manifest:
    """A verified manifest: overlay stems, member digests, creation time, signer key id."""

    stems: tuple[str, ...]
    members: dict[str, str]
    created: str
    keyid: str


def _check_info(path: Path, info: zipfile.ZipInfo) -> None:
    """Refuse unsafe zip members before anything is read."""
    name = info.filename
    parts = re.split(r"[/\\]", name)
    if ".." in parts:
        raise BundleError(f"unsafe member name {name!r} (contains '..')", path)
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise BundleError(f"unsafe member name {name!r} (absolute path)", path)
    if "\x00" in name or "/" in name or "\\" in name or not name:
        raise BundleError(f"unsafe member name {name!r} (bundles are flat: no folders)", path)
    mode = (info.external_attr >> 16) & 0xFFFF
    kind = stat.S_IFMT(mode)
    if stat.S_ISLNK(mode):
        raise BundleError(f"member {name!r} is a symlink", path)
    if kind and kind != stat.S_IFREG:
        what = "device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "directory" if stat.S_ISDIR(mode) else "special file"
        raise BundleError(f"member {name!r} is a {what}, not a regular file", path)
    if info.is_dir():
        raise BundleError(f"member {name!r} is a directory", path)
    if info.flag_bits & 0x1:
        raise BundleError(f"member {name!r} is encrypted", path)
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise BundleError(f"member {name!r} uses unsupported compression {info.compress_type}", path)
    limit = member_limit(name)
    if limit == 0:
        raise BundleError(f"member {name!r} is not an overlay, metadata, envelope or manifest", path)
    if info.file_size > limit:
        raise BundleError(f"oversized member {name!r} ({info.file_size} bytes > {limit})", path)


def _parse_manifest(payload: bytes, path: Path) -> tuple[tuple[str, ...], dict[str, str], str]:
    try:
        data = json.loads(payload.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError(f"manifest is not JSON: {exc}", path) from None
    if not isinstance(data, dict) or data.get("_type") != BUNDLE_FORMAT:
        raise BundleError(f"manifest is not a {BUNDLE_FORMAT} manifest", path)
    stems, members, created = data.get("overlays"), data.get("members"), data.get("createdAt", "")
    if not isinstance(stems, list) or not all(isinstance(s, str) and parse_stem(s) for s in stems):
        raise BundleError("manifest 'overlays' must be a list of overlay stems", path)
    if len(set(stems)) != len(stems):
        raise BundleError("manifest lists an overlay twice", path)
    if not isinstance(members, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and _HEX64.fullmatch(v) for k, v in members.items()
    ):
        raise BundleError("manifest 'members' must map member names to SHA-256 hex digests", path)
    for stem in stems:
        if stem + OVERLAY_SUFFIX not in members:
            raise BundleError(f"manifest lists overlay {stem!r} without its {OVERLAY_SUFFIX} member", path)
    for name in members:
        split = split_member(name)
        if split is None or split[0] not in stems:
            raise BundleError(f"manifest member {name!r} belongs to no listed overlay", path)
    return tuple(stems), dict(members), str(created)


@dataclass(frozen=True)
class BundleEntry:
    """One overlay inside a bundle (the :class:`~codesuture.overlay.store.Entry` protocol)."""

    store: "BundleStore" = field(repr=False)
    name: str
    key: str
    cache_tag: str
    source_prefix: str

    def read(self, suffix: str, limit: int) -> bytes | None:
        return self.store.read_member(self.name + suffix, limit)


class BundleStore:
    """Overlays in a verified bundle; same interface as ``DirectoryStore`` for the loader.

    *policy*: whose trust root verifies the manifest (default
    ``LoadPolicy.from_env()``); *root*: a trust root to use instead. :meth:`index`
    raises :class:`BundleError` when the bundle is refused; a loader treats that as a
    store without overlays (the original modules load).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        policy: "LoadPolicy | None" = None,
        *,
        root: "TrustRoot | None" = None,
    ) -> None:
        self.path = Path(path)
        self._policy = policy
        self._root = root
        self._manifest: Manifest | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"BundleStore({str(self.path)!r})"

    @property
    def policy(self) -> "LoadPolicy":
        if self._policy is None:
            from codesuture.trust.policy import LoadPolicy

            self._policy = LoadPolicy.from_env()
        return self._policy

    def _trust_root(self) -> "TrustRoot":
        if self._root is not None:
            return self._root
        from codesuture.trust.policy import trust_root

        if self.policy.keys_dir is None:
            raise BundleError("bundles are always verified, but no trust root is configured (--keys / CODESUTURE_KEYS)", self.path)
        try:
            return trust_root(self.policy)
        except BundleError:
            raise
        except TrustError as exc:
            raise BundleError(f"trust root unusable: {exc}", self.path) from None

    def _open(self) -> zipfile.ZipFile:
        try:
            st = os.lstat(self.path)
        except OSError as exc:
            raise BundleError(f"cannot open bundle: {exc.strerror or exc}", self.path) from None
        if not stat.S_ISREG(st.st_mode):
            raise BundleError("bundle is not a regular file", self.path)
        if st.st_size > MAX_BUNDLE_BYTES:
            raise BundleError(f"oversized bundle ({st.st_size} bytes > {MAX_BUNDLE_BYTES})", self.path)
        try:
            return zipfile.ZipFile(self.path)
        except Exception as exc:  # BadZipFile, OSError, EOFError, struct/Value errors on junk
            raise BundleError(f"not a zip bundle: {exc}", self.path) from None

    def _read(self, zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> bytes:
        try:
            with zf.open(info) as fh:
                data = fh.read(limit + 1)
        except Exception as exc:  # bad CRC, truncated data, zlib errors
            raise BundleError(f"member {info.filename!r} is unreadable: {exc}", self.path) from None
        if len(data) > limit:
            raise BundleError(f"oversized member {info.filename!r} (> {limit} bytes)", self.path)
        return data

    def verify(self) -> Manifest:
        """Check the zip's structure and the manifest's signature and member list
        (once; the result is kept). Raises :class:`BundleError` naming the bundle."""
        with self._lock:
            if self._manifest is not None:
                return self._manifest
            from codesuture.trust import dsse

            root = self._trust_root()
            with self._open() as zf:
                try:
                    infos = zf.infolist()
                except Exception as exc:
                    raise BundleError(f"not a zip bundle: {exc}", self.path) from None
                if len(infos) > MAX_MEMBERS:
                    raise BundleError(f"too many members ({len(infos)} > {MAX_MEMBERS})", self.path)
                seen: set[str] = set()
                for info in infos:
                    _check_info(self.path, info)
                    if info.filename in seen:
                        raise BundleError(f"duplicate member {info.filename!r}", self.path)
                    seen.add(info.filename)
                if MANIFEST_NAME not in seen:
                    raise BundleError(f"no signed manifest ({MANIFEST_NAME})", self.path)
                raw = self._read(zf, zf.getinfo(MANIFEST_NAME), MAX_ENVELOPE_BYTES)
            try:
                verified = dsse.verify(raw, root, MANIFEST_PAYLOAD_TYPE, f"{self.path}:{MANIFEST_NAME}")
            except TrustError as exc:
                raise BundleError(f"manifest does not verify: {exc.reason}", self.path) from None
            stems, members, created = _parse_manifest(verified.payload, self.path)
            present = seen - {MANIFEST_NAME}
            for name in sorted(present - set(members)):
                raise BundleError(f"member {name!r} is not in the signed manifest", self.path)
            for name in sorted(set(members) - present):
                raise BundleError(f"member {name!r} listed in the manifest is missing", self.path)
            self._manifest = Manifest(stems, members, created, verified.keyid)
            log.debug("bundle %s verified: %d overlay(s), manifest key %s", self.path, len(stems), verified.keyid)
            return self._manifest

    def entries(self) -> list[BundleEntry]:
        manifest = self.verify()
        out = []
        for stem in manifest.stems:
            parsed = parse_stem(stem)
            assert parsed is not None  # checked in _parse_manifest
            out.append(BundleEntry(self, stem, *parsed))
        return out

    def index(self) -> dict[str, list[BundleEntry]]:
        """Store key -> entries, after verifying the bundle. Raises :class:`BundleError`."""
        out: dict[str, list[BundleEntry]] = {}
        for entry in self.entries():
            out.setdefault(entry.key, []).append(entry)
        return out

    def read_member(self, name: str, limit: int) -> bytes | None:
        """Bytes of member *name* (None when the manifest does not list it), capped at
        *limit* bytes and checked against the manifest digest. Raises
        :class:`OverlayError` when oversized, :class:`BundleError` when it does not match."""
        manifest = self.verify()
        expected = manifest.members.get(name)
        if expected is None:
            return None
        with self._open() as zf:
            try:
                info = zf.getinfo(name)
            except KeyError:
                raise BundleError(f"member {name!r} listed in the manifest is missing", self.path) from None
            _check_info(self.path, info)
            if info.file_size > limit:
                raise OverlayError(f"{self.path}:{name}", f"oversized ({info.file_size} bytes > {limit})")
            data = self._read(zf, info, limit)
        if hashlib.sha256(data).hexdigest() != expected:
            raise BundleError(f"member {name!r} does not match its digest in the signed manifest", self.path)
        return data


# ---------------------------------------------------------------------------- verify


@dataclass(frozen=True)
class MemberResult:
    """The verdict on one overlay of a bundle."""

    stem: str
    ok: bool
    reason: str = ""
    signer: str | None = None
    module: str | None = None
    expires: str | None = None


@dataclass(frozen=True)
class BundleReport:
    """The verdict on a bundle: ``reason`` is set when the bundle itself is refused."""

    path: Path
    ok: bool
    reason: str = ""
    manifest_keyid: str | None = None
    overlays: tuple[MemberResult, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "ok": self.ok,
            "reason": self.reason,
            "manifest_keyid": self.manifest_keyid,
            "overlays": [
                {"stem": m.stem, "ok": m.ok, "reason": m.reason, "signer": m.signer, "module": m.module, "expires": m.expires}
                for m in self.overlays
            ],
        }


def verify_bundle(
    path: str | os.PathLike[str], keys_dir: str | os.PathLike[str], *, now: float | None = None
) -> BundleReport:
    """Verify a bundle completely against the trust root in *keys_dir* (loaded fresh):
    structure, manifest signature, every member digest, and every overlay through
    :func:`~codesuture.trust.policy.admit` (signature, subject, revocation, expiry).
    Never raises for a bad bundle: the report says why."""
    from codesuture.trust.keys import TrustRoot
    from codesuture.trust.policy import LoadPolicy, admit

    p = Path(path)
    try:
        root = TrustRoot.load(keys_dir)
    except TrustError as exc:
        return BundleReport(p, False, f"trust root: {exc}")
    policy = LoadPolicy(Path(keys_dir), require_signed=True, strict_statements=True)
    store = BundleStore(p, policy, root=root)
    try:
        manifest = store.verify()
        for name in manifest.members:  # every member, also sidecars admit() does not read
            store.read_member(name, member_limit(name))
    except CodeSutureError as exc:
        return BundleReport(p, False, getattr(exc, "reason", str(exc)))
    results = []
    for entry in store.entries():
        try:
            admitted: Admitted = admit(entry, policy, now, root=root)
        except CodeSutureError as exc:
            results.append(MemberResult(entry.name, False, getattr(exc, "reason", str(exc))))
        else:
            results.append(MemberResult(entry.name, True, "", admitted.signer, admitted.meta.module, admitted.meta.expires))
    ok = all(r.ok for r in results)
    return BundleReport(p, ok, "" if ok else "some overlays are refused", manifest.keyid, tuple(results))
