"""Create a deploy bundle: a signed folder in one zip file.

``codesuture bundle create DIR -o FILE`` zips exactly what the folder's signed overlay
set pins, plus the set itself (layout: :mod:`codesuture.store.bundle`), after checking
that every pinned file is still the one that was signed. With ``--key`` the folder is
signed first (:func:`codesuture.ship.sign.sign_folder`). The zip is written
atomically, with fixed timestamps and regular-file modes, so the same folder gives the
same bundle bytes.

With ``--sbom`` the bundle also carries ``sbom.cdx.json``, the CycloneDX SBOM of exactly
the overlays in it (:mod:`codesuture.ship.sbom`, made from the bundle's own members).
That member is **not signed and not pinned** by the signed set: the set's format pins
overlay files only, and a bundle without it stays a bundle any loader admits. The
loader and ``bundle verify`` ignore it (it never decides what loads); ``codesuture sbom
BUNDLE`` regenerates it from the signed contents to check it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import zipfile
from dataclasses import dataclass
from typing import Any

from codesuture.errors import BundleError, CodeSutureError
from codesuture.overlay.names import MAX_SET_BYTES, SBOM_NAME, SET_NAME
from codesuture.store.bundle import member_limit
from codesuture.util.files import atomic_write, read_regular

_FIXED_TIME = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class BundleInfo:
    """A created bundle: where, the overlay stems in it, member digests, the set's
    signer key id, name and version."""

    path: str
    stems: tuple[str, ...]
    members: dict[str, str]
    keyid: str
    set_name: str
    version: int
    sbom: bool = False


def create_bundle(directory: str | os.PathLike[str], output: str | os.PathLike[str], *,
                  private_key: Any = None, options: Any = None, sbom: bool = False) -> BundleInfo:
    """Bundle the signed folder *directory* into zip file *output*. With *private_key*
    the folder is signed first (``options``: a :class:`~codesuture.ship.sign.SignOptions`).
    With *sbom*, the bundle also holds the validated CycloneDX SBOM of its overlays
    (unsigned member ``sbom.cdx.json``; raises :class:`~codesuture.errors.CodeSutureError`
    when it cannot be made, and nothing is written).
    Raises :class:`BundleError` naming the file: not a folder, no signed set, a pinned
    file missing, changed or not a regular file, or signing failed."""
    from codesuture.trust.dsse import Envelope
    from codesuture.trust.overlay_set import parse_set_statement

    src = os.fspath(directory)
    if not os.path.isdir(src):
        raise BundleError("not a directory of overlays", src)
    if private_key is not None:
        from codesuture.ship.sign import SignOptions, sign_folder

        failed = [r for r in sign_folder(src, private_key, options or SignOptions()) if not r.ok]
        if failed:
            raise BundleError(f"signing failed: {failed[0].overlay}: {failed[0].reason}", src)
    set_path = os.path.join(src, SET_NAME)
    try:
        raw = read_regular(set_path, MAX_SET_BYTES)
    except CodeSutureError as exc:
        raise BundleError(str(getattr(exc, "reason", exc)), set_path) from None
    if raw is None:
        raise BundleError("the folder has no signed overlay set (run 'codesuture sign --key KEY DIR' first)", src)
    try:
        envelope = Envelope.loads(raw, set_path)
        vset = parse_set_statement(envelope.payload, envelope.signatures[0].keyid, set_path)
    except CodeSutureError as exc:
        raise BundleError(f"signed overlay set unreadable: {getattr(exc, 'reason', exc)}", set_path) from None
    members: dict[str, bytes] = {SET_NAME: raw}
    for name, digest in sorted(vset.files.items()):
        path = os.path.join(src, name)
        try:
            data = read_regular(path, member_limit(name))
        except CodeSutureError as exc:
            raise BundleError(str(getattr(exc, "reason", exc)), path) from None
        if data is None:
            raise BundleError("pinned by the signed overlay set but missing", path)
        if hashlib.sha256(data).hexdigest() != digest:
            raise BundleError("changed since the folder was signed (sign it again)", path)
        members[name] = data
    if sbom:
        members[SBOM_NAME] = _sbom_of(_zip(members), output)
    out = atomic_write(output, _zip(members))
    return BundleInfo(out, tuple(sorted(vset.overlays)), {n: hashlib.sha256(d).hexdigest() for n, d in members.items()},
                      vset.keyid, vset.name, vset.version, sbom)


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, _FIXED_TIME)
            info.create_system = 3
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return buf.getvalue()


def _sbom_of(bundle: bytes, output: str | os.PathLike[str]) -> bytes:
    """The SBOM JSON of the bundle *bundle* (its bytes), made by reading it back as the
    loader would (a temporary file beside *output*)."""
    import tempfile

    from codesuture.ship.sbom import render
    from codesuture.store.bundle import BundleStore

    fd, tmp = tempfile.mkstemp(prefix=".sbom-", suffix=".zip", dir=os.path.dirname(os.path.abspath(output)))
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(bundle)
        store = BundleStore(tmp, budget=None)
        try:
            text, _ = render(store)
        finally:
            store.close()
    finally:
        os.unlink(tmp)
    return text.encode("utf-8")


def report_json(results: list[Any]) -> str:
    """``codesuture bundle verify --json`` output for verify results."""
    return json.dumps({"ok": bool(results) and all(r.ok for r in results), "results": [r.to_json() for r in results]},
                      indent=2)


__all__ = ["BundleInfo", "create_bundle", "report_json"]
