"""A deploy bundle: one zip file holding a signed folder, read in place.

Layout (flat, no folders)::

    overlays.manifest.dsse.json     the folder's signed overlay set (see codesuture.trust.overlay_set)
    <stem>.overlay                  overlay bytes
    <stem>.json                     metadata sidecar
    <stem>.dsse.json                the overlay's own DSSE envelope (or <stem>.sigstore.json)
    sbom.cdx.json                   optional CycloneDX SBOM (bundle create --sbom): unsigned,
                                    not pinned by the set, never read by the loader

Opening checks the zip's structure before any member is read, and its
end-of-central-directory record before the central directory is parsed (entry count,
central directory size and place: a bundle claiming millions of members costs one
read of its last 64 KiB, :func:`check_directory`): a regular file of at most
:data:`MAX_BUNDLE_BYTES`; at most :data:`MAX_MEMBERS` members, each with a safe
flat name (no ``..``, no absolute path, no folder), no duplicates, a regular-file mode
(no symlink, device, FIFO, directory; zip has no hard-link entries), no encryption,
stored or deflated, and a declared size under its cap (checked again while reading).
Any failure is a :class:`~codesuture.errors.BundleError` naming the bundle and the
reason. Which members may load is decided by the load policy from the signed set, which
must pin every member exactly but the unsigned SBOM, which is never read
(:func:`codesuture.trust.policy.store_set`). The loader reads at most
:data:`READ_BUDGET` bytes of members per bundle per process, as from a folder.
"""

from __future__ import annotations

import os
import re
import stat
import threading
import zipfile

from codesuture.errors import BundleError, OverlayError
from codesuture.overlay.names import (
    LIMITS, MAX_SBOM_BYTES, MAX_SET_BYTES, OVERLAY_SUFFIX, SBOM_NAME, SET_NAME, parse_stem, split_member,
)
from codesuture.store import Entry

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from typing import BinaryIO

#: Caps: members in one bundle, and the bundle file (bytes).
MAX_MEMBERS = 4096
MAX_BUNDLE_BYTES = 1024 * 1024 * 1024
#: Cap of the central directory (bytes): a header of 46 bytes plus a name, extra field
#: and comment per member, at most 1 KiB each on average.
MAX_CENTRAL_DIRECTORY_BYTES = MAX_MEMBERS * 1024
#: Bytes read from one bundle per process by the loader (the hostile-store bound of
#: folders, :data:`codesuture.store.directory.READ_BUDGET`).
READ_BUDGET = 64 * 1024 * 1024

_EOCD = b"PK\x05\x06"
_EOCD_SIZE = 22
_ZIP64_LOCATOR = b"PK\x06\x07"
_ZIP64_EOCD = b"PK\x06\x06"


def check_directory(fh: "BinaryIO", size: int, where: str) -> int:
    """Check a zip's end-of-central-directory record (and its ZIP64 record, when there
    is one) before its central directory is parsed: one disk, at most
    :data:`MAX_MEMBERS` entries, a central directory of at most
    :data:`MAX_CENTRAL_DIRECTORY_BYTES` that lies inside the file. Reads at most
    64 KiB + 98 bytes from the end of *fh* (a file of *size* bytes). Returns the entry
    count. Raises :class:`BundleError` (APPNOTE.TXT 4.3.14-4.3.16)."""
    import struct

    tail_len = min(size, _EOCD_SIZE + 0xFFFF)
    fh.seek(size - tail_len)
    tail = fh.read(tail_len)
    found: list[int] = []  # signature positions, last first
    i = tail.rfind(_EOCD)
    while i >= 0:
        if i <= len(tail) - _EOCD_SIZE:
            found.append(i)
        i = tail.rfind(_EOCD, 0, i)
    # the record whose comment ends the file; else the last one (as zipfile reads it)
    exact = [i for i in found if i + _EOCD_SIZE + struct.unpack_from("<H", tail, i + 20)[0] == len(tail)]
    if not found:
        raise BundleError("not a zip bundle: no end-of-central-directory record", where)
    at = exact[0] if exact else found[0]
    _, disk, cd_disk, here, total, cd_size, cd_offset, _ = struct.unpack_from("<4s4H2LH", tail, at)
    if 0xFFFF in (here, total) or 0xFFFFFFFF in (cd_size, cd_offset):
        loc = at - 20
        if loc < 0 or tail[loc:loc + 4] != _ZIP64_LOCATOR:
            raise BundleError("not a zip bundle: ZIP64 locator missing", where)
        _, z_disk, z_offset, z_disks = struct.unpack_from("<4sLQL", tail, loc)
        if z_disk != 0 or z_disks != 1 or z_offset > size - 56:
            raise BundleError("not a zip bundle: bad ZIP64 locator", where)
        fh.seek(z_offset)
        rec = fh.read(56)
        if len(rec) != 56 or rec[:4] != _ZIP64_EOCD:
            raise BundleError("not a zip bundle: bad ZIP64 end-of-central-directory record", where)
        _, _, _, _, disk, cd_disk, here, total, cd_size, cd_offset = struct.unpack("<4sQ2H2L4Q", rec)
    if disk != 0 or cd_disk != 0 or here != total:
        raise BundleError("multi-disk zip archives are not bundles", where)
    if total > MAX_MEMBERS:
        raise BundleError(f"too many members ({total} > {MAX_MEMBERS}, from its end-of-central-directory record)", where)
    if cd_size > MAX_CENTRAL_DIRECTORY_BYTES:
        raise BundleError(f"central directory too large ({cd_size} bytes > {MAX_CENTRAL_DIRECTORY_BYTES})", where)
    if cd_offset + cd_size > size:
        raise BundleError("not a zip bundle: its central directory lies outside the file", where)
    return int(total)


def member_limit(name: str) -> int:
    """Size cap (bytes) of member *name*; 0 when it is not a member a bundle may hold."""
    if name == SET_NAME:
        return MAX_SET_BYTES
    if name == SBOM_NAME:
        return MAX_SBOM_BYTES
    split = split_member(name)
    return LIMITS[split[1]] if split else 0


def check_member(bundle: str, info: zipfile.ZipInfo) -> None:
    """Refuse an unsafe zip member before anything is read. Raises :class:`BundleError`."""
    name = info.filename
    if ".." in re.split(r"[/\\]", name):
        raise BundleError(f"unsafe member name {name!r} (contains '..')", bundle)
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise BundleError(f"unsafe member name {name!r} (absolute path)", bundle)
    if "\x00" in name or "/" in name or "\\" in name or not name:
        raise BundleError(f"unsafe member name {name!r} (bundles are flat: no folders)", bundle)
    mode = (info.external_attr >> 16) & 0xFFFF
    kind = stat.S_IFMT(mode)
    if stat.S_ISLNK(mode):
        raise BundleError(f"member {name!r} is a symlink", bundle)
    if kind and kind != stat.S_IFREG:
        what = "device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "directory" if stat.S_ISDIR(mode) else "special file"
        raise BundleError(f"member {name!r} is a {what}, not a regular file", bundle)
    if info.is_dir():
        raise BundleError(f"member {name!r} is a directory", bundle)
    if info.flag_bits & 0x1:
        raise BundleError(f"member {name!r} is encrypted", bundle)
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise BundleError(f"member {name!r} uses unsupported compression {info.compress_type}", bundle)
    limit = member_limit(name)
    if limit == 0:
        raise BundleError(f"member {name!r} is not an overlay file or the signed overlay set", bundle)
    if info.file_size > limit:
        raise BundleError(f"oversized member {name!r} ({info.file_size} bytes > {limit})", bundle)


class BundleStore:
    """The overlays in bundle file *path*. Its structure is checked once, on first use;
    :meth:`index` and :meth:`read` raise :class:`BundleError` when it is refused (a
    loader then runs with no overlays: the original modules load)."""

    kind = "bundle"

    def __init__(self, path: str | os.PathLike[str], *, budget: int | None = READ_BUDGET) -> None:
        self.path = os.path.abspath(os.fspath(path))
        #: Bytes this store may still read (None: unlimited, for review tools).
        self._budget = budget
        # The operator names the bundle (an attacker of the threat model cannot): a
        # symlinked release (deploy.cso -> releases/v7.cso) resolves once, here.
        self._real = os.path.realpath(self.path)
        self.location = self.path
        self._members: dict[str, zipfile.ZipInfo] | None = None
        self._zip: zipfile.ZipFile | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"BundleStore({self.path!r})"

    def display(self, name: str) -> str:
        return f"{self.path}:{name}"

    def exists(self) -> bool:
        return os.path.isfile(self.path)

    def _open(self) -> zipfile.ZipFile:
        try:
            st = os.lstat(self._real)
        except OSError as exc:
            raise BundleError(f"cannot open bundle: {exc.strerror or exc}", self.path) from None
        if not stat.S_ISREG(st.st_mode):
            raise BundleError("bundle is not a regular file", self.path)
        if st.st_size > MAX_BUNDLE_BYTES:
            raise BundleError(f"oversized bundle ({st.st_size} bytes > {MAX_BUNDLE_BYTES})", self.path)
        try:
            fd = os.open(self._real, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
            fh = os.fdopen(fd, "rb")
        except OSError as exc:
            raise BundleError(f"cannot open bundle: {exc.strerror or exc}", self.path) from None
        try:
            fst = os.fstat(fh.fileno())
            if not stat.S_ISREG(fst.st_mode):
                raise BundleError("bundle is not a regular file", self.path)
            if fst.st_size > MAX_BUNDLE_BYTES:
                raise BundleError(f"oversized bundle ({fst.st_size} bytes > {MAX_BUNDLE_BYTES})", self.path)
            check_directory(fh, fst.st_size, self.path)  # before zipfile parses a single entry
            fh.seek(0)
            return zipfile.ZipFile(fh)
        except BundleError:
            fh.close()
            raise
        except Exception as exc:  # BadZipFile, OSError, EOFError, struct/Value errors on junk
            fh.close()
            raise BundleError(f"not a zip bundle: {exc}", self.path) from None

    def members(self) -> dict[str, zipfile.ZipInfo]:
        """Member name -> zip entry, after the structural checks (once; the zip stays
        open for reads, so the bundle read is the one checked)."""
        with self._lock:
            if self._members is None:
                zf = self._open()
                try:
                    infos = zf.infolist()
                except Exception as exc:  # noqa: BLE001
                    zf.close()
                    raise BundleError(f"not a zip bundle: {exc}", self.path) from None
                if len(infos) > MAX_MEMBERS:
                    zf.close()
                    raise BundleError(f"too many members ({len(infos)} > {MAX_MEMBERS})", self.path)
                members: dict[str, zipfile.ZipInfo] = {}
                try:
                    for info in infos:
                        check_member(self.path, info)
                        if info.filename in members:
                            raise BundleError(f"duplicate member {info.filename!r}", self.path)
                        members[info.filename] = info
                except BundleError:
                    zf.close()
                    raise
                self._members, self._zip = members, zf
            return self._members

    def close(self) -> None:
        with self._lock:
            if self._zip is not None:
                self._zip.close()
                self._zip = None
                self._members = None

    def names(self) -> list[str]:
        return sorted(self.members())

    def index(self) -> dict[str, list[Entry]]:
        """Store key -> entries of every ``<stem>.overlay`` member. Raises BundleError."""
        out: dict[str, list[Entry]] = {}
        for name in self.names():
            if name.endswith(OVERLAY_SUFFIX):
                parsed = parse_stem(name[: -len(OVERLAY_SUFFIX)])
                if parsed:
                    out.setdefault(parsed[0], []).append(Entry(self, name[: -len(OVERLAY_SUFFIX)], *parsed))
        return out

    def read(self, name: str, limit: int) -> bytes | None:
        """Bytes of member *name* (None when the bundle has no such member), capped at
        *limit* bytes. Raises :class:`BundleError` when the bundle is refused or the
        member unreadable, :class:`OverlayError` when it is over *limit*."""
        info = self.members().get(name)
        if info is None:
            return None
        if info.file_size > limit:
            raise OverlayError(self.display(name), f"oversized ({info.file_size} bytes > {limit})")
        with self._lock:
            if self._zip is None:
                raise BundleError("bundle was closed", self.path)
            if self._budget is not None:
                if info.file_size > self._budget:
                    raise OverlayError(self.display(name), f"store read budget exhausted ({READ_BUDGET} bytes per process)")
                self._budget -= info.file_size  # declared size; the read is capped at it (limit) below
            try:
                with self._zip.open(info) as fh:
                    data = fh.read(limit + 1)
            except Exception as exc:  # bad CRC, truncated data, zlib errors
                raise BundleError(f"member {name!r} is unreadable: {exc}", self.path) from None
        if len(data) > limit:
            raise OverlayError(self.display(name), f"oversized (> {limit} bytes)")
        return data


__all__ = ["BundleStore", "MAX_MEMBERS", "MAX_BUNDLE_BYTES", "READ_BUDGET", "member_limit", "check_member", "check_directory"]
