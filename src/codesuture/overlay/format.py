"""Byte layout of an overlay file (``*.overlay``).

An overlay is one module's code object, marshalled, bound to one source file's exact
bytes and one interpreter. Layout (little-endian, 48-byte header then payload)::

    offset  size  field
    0       4     b"CSOV"                          file magic
    4       4     u32 format version (1)
    8       4     importlib.util.MAGIC_NUMBER      interpreter, as in a pyc (PEP 552)
    12      32    SHA-256 of the module's source bytes
    44      4     u32 length of the marshalled code, in bytes
    48      n     marshal.dumps(module code object)

Parsing the header never unmarshals: :func:`parse` only slices bytes; the loader calls
``marshal.loads`` on :attr:`Overlay.payload` only after policy admitted the file.
"""

from __future__ import annotations

import struct
from collections import namedtuple
from importlib.util import MAGIC_NUMBER

from codesuture.errors import OverlayError
from codesuture.overlay.names import MAX_OVERLAY_BYTES
from codesuture.util.digest import sha256

FILE_MAGIC = b"CSOV"
FORMAT_VERSION = 1
HEADER = struct.Struct("<4sI4s32sI")
HEADER_SIZE = HEADER.size  # 48 bytes


class Overlay(namedtuple("_Overlay", "magic_number source_sha256 payload")):
    """A parsed (not unmarshalled) overlay file: ``magic_number`` (4 bytes,
    ``importlib.util.MAGIC_NUMBER`` of the building interpreter), ``source_sha256``
    (32 bytes), ``payload`` (the marshalled module code object)."""

    __slots__ = ()

    @property
    def matches_interpreter(self) -> bool:
        return self.magic_number == MAGIC_NUMBER


def pack(code_marshalled: bytes, source: bytes) -> bytes:
    """Return overlay file bytes for *code_marshalled* (``marshal.dumps`` output) built
    from *source* (the module's exact source bytes) on this interpreter."""
    header = HEADER.pack(
        FILE_MAGIC, FORMAT_VERSION, MAGIC_NUMBER, sha256(source).digest(), len(code_marshalled)
    )
    return header + code_marshalled


def parse(data: bytes, path: object = "<overlay>") -> Overlay:
    """Split overlay *data* into header fields and payload without unmarshalling.

    Raises :class:`OverlayError` naming *path* when the data is truncated, oversized,
    not an overlay, or of an unknown format version.
    """
    if len(data) > MAX_OVERLAY_BYTES:
        raise OverlayError(path, f"oversized overlay ({len(data)} bytes > {MAX_OVERLAY_BYTES})")
    if len(data) < HEADER_SIZE:
        raise OverlayError(path, f"truncated overlay ({len(data)} bytes, header needs {HEADER_SIZE})")
    magic, version, pymagic, src_digest, length = HEADER.unpack_from(data)
    if magic != FILE_MAGIC:
        raise OverlayError(path, "not a CodeSuture overlay (bad file magic)")
    if version != FORMAT_VERSION:
        raise OverlayError(path, f"unknown overlay format version {version}")
    if len(data) - HEADER_SIZE != length:
        raise OverlayError(path, f"truncated overlay (payload {len(data) - HEADER_SIZE} of {length} bytes)")
    return Overlay(pymagic, src_digest, data[HEADER_SIZE:])
