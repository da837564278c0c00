"""Suggest source fixes: each recorded patch written as Python at the patched line.

For every patch of a store (a folder or a bundle) or of one overlay, :func:`suggest`
finds the module's source (the metadata's portable origin, resolved against the app
root, or beside the store), checks it is the exact source the overlay was built from
(SHA-256), locates the patched expression from the recorded instruction positions
(line, end line and UTF-8 byte columns, as ``co_positions`` gives them and as
:mod:`ast` numbers nodes) and rewrites it so the plain source does what the guard does,
with the rewrite the guard's row of the families table names
(:attr:`codesuture.guards.families.Family.rewrite`, planned in
:mod:`codesuture.review.rewrite`); ``docs/guards.md`` shows every form (``d[k]`` ->
``d.get(k, D)``, ``x.a`` -> ``(x.a if x is not None else D)``, ``int(s)`` -> a ``try``
with ``except ValueError``, ...), one row per family form, checked against the table.

``D`` is the patch's static default (``GuardSpec.default``). Where the live guard
decides its value when it fires from run-time evidence (container elements, the other
operand: ``describe_yield``), the suggestion writes the static default, or the value the
source itself makes certain (a literal operand), and the comment line placed above the
statement says what the live guard yields. Operands that are not plain names, constants
or attribute/subscript reads of them are evaluated once, in their original order, through
assignment expressions (``_cs_1 := ...``). Statement-level forms (``if``/``try``) are
used only for a statement that has its lines to itself, and re-indent nothing inside a
multi-line string.

Every rewritten module is re-parsed and compiled, and the patched functions must still be
there; a patch that cannot be written this way is reported (:class:`SuggestError`), not
written some other way. The diff's paths are relative to where the origin is rooted (the app root
for ``app:``, the site-packages directory for ``site-packages:``, the ``sys.path`` entry
for ``sys.path:``) with ``a/``/``b/`` prefixes: apply it with ``patch -p1`` or ``git
apply`` from there.
"""

from __future__ import annotations

import difflib
import hashlib
import io
import os
import tokenize
from dataclasses import dataclass, field
from typing import Any, Iterable

from codesuture.errors import CodeSutureError
from codesuture.patch.spec import PatchRecord


from codesuture.review.rewrite import (Failure, SuggestError, Suggestion, guard_name, rewrite_source, site_label,
                                       split_lines)


@dataclass
class FileDiff:
    """The suggestions for one source file and their unified diff."""

    origin: str
    module: str
    path: str
    source: str
    diff: str
    suggestions: list[Suggestion] = field(default_factory=list)

    @property
    def apply_from(self) -> str:
        """Where ``patch -p1`` applies this diff, in words."""
        kind = self.origin.partition(":")[0]
        return {"app": "the app root", "site-packages": "the site-packages directory",
                "sys.path": "the sys.path entry holding it"}.get(kind, "the folder the path is relative to")


@dataclass
class Report:
    """What :func:`suggest` produced: one diff per source file, and the patches that
    have no suggestion."""

    files: list[FileDiff] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)

    @property
    def suggestions(self) -> list[Suggestion]:
        return [s for f in self.files for s in f.suggestions]

    def text(self) -> str:
        """All diffs, each after one ``#`` line naming its origin and where to apply it
        (``patch`` and ``git apply`` skip such lines)."""
        out = []
        for f in self.files:
            if f.diff:
                out.append(f"# codesuture suggest: {f.origin} ({f.module}); apply with patch -p1 from {f.apply_from}\n")
                out.append(f.diff)
        return "".join(out)


# ---------------------------------------------------------------------------- reading stores


def suggest(target: str, app_root: str | None = None) -> Report:
    """Suggestions for every patch of *target* (a folder, a bundle, or one ``.overlay``
    file), read from each overlay's signed Statement, or its sidecar when unsigned (not
    verified: a suggestion is source for review, nothing loads it). Sources are found
    from each overlay's origin (``app:`` against *app_root*,
    ``site-packages:``/``sys.path:`` on this interpreter), else beside the store. Raises
    :class:`~codesuture.errors.CodeSutureError` when *target* cannot be read; a patch or
    overlay without a suggestion is a :class:`Failure` in the report."""
    from codesuture.overlay.names import OVERLAY_SUFFIX
    from codesuture.ship.metadata import entries_of, signed_meta

    report = Report()
    groups: dict[tuple[str, str], tuple[str, list[PatchRecord]]] = {}
    for entry in entries_of(target):
        where = entry.path(OVERLAY_SUFFIX)
        try:
            meta, _ = signed_meta(entry, None)
        except CodeSutureError as exc:
            report.failures.append(Failure(where, str(exc)))
            continue
        module, records = groups.setdefault((meta.origin, meta.source_sha256), (meta.module, []))
        records.extend(meta.patches)
    for (origin, sha), (module, records) in sorted(groups.items()):
        try:
            path, rel, raw = _find_source(origin, sha, target, app_root)
            text, bom = _decode(raw, path)
            new, done, failed = rewrite_source(text, _unique(records, module, report.failures), module=module,
                                               filename=origin)
        except SuggestError as exc:
            report.failures.append(Failure(f"{module} ({origin})", str(exc)))
            continue
        report.failures.extend(failed)
        diff = unified_diff(bom + text, bom + new, rel) if done else ""
        report.files.append(FileDiff(origin, module, rel, path, diff, done))
    return report


def _unique(records: Iterable[PatchRecord], module: str, failures: list[Failure]) -> list[PatchRecord]:
    """One record per patched expression: the same patch recorded by overlays of the
    same source for several interpreters is suggested once."""
    seen: dict[tuple[Any, ...], PatchRecord] = {}
    for r in records:
        key = (r.qualname, r.line, r.end_line or r.line, r.col, r.end_col)
        other = seen.get(key)
        if other is None:
            seen[key] = r
        elif tuple(other.guard) != tuple(r.guard):
            failures.append(Failure(site_label(module, r), f"conflicts with {guard_name(other)} recorded for the same "
                                                       "expression by another overlay"))
    return sorted(seen.values(), key=lambda r: (r.line or 0, r.col or 0))


def _find_source(origin: str, sha: str, target: str, app_root: str | None) -> tuple[str, str, bytes]:
    """``(path, path relative to the origin's root, its bytes)`` of the source *origin*
    names whose SHA-256 is *sha*. Raises SuggestError."""
    from codesuture.overlay.names import resolve_origin

    kind, sep, rel = origin.partition(":")
    if not sep or not rel or os.path.isabs(origin) or ".." in rel.split("/"):
        raise SuggestError(f"origin {origin!r} is not a portable origin (app:, site-packages:, sys.path:)")
    candidates = []
    found = resolve_origin(origin, app_root)
    if found:
        candidates.append(found)
    # Beside the store: a store kept in the app's folder (app/overlays, app/deploy.cso).
    base = os.path.dirname(os.path.abspath(target))
    if os.path.isfile(target) and target.endswith(".overlay"):
        base = os.path.dirname(base)
    candidates.append(os.path.join(base, *rel.split("/")))
    seen_other = None
    for path in candidates:
        if not os.path.isfile(path):
            continue
        try:
            with open(path, "rb") as fh:
                raw = fh.read()
        except OSError as exc:
            raise SuggestError(f"{path}: {exc.strerror or exc}") from None
        if hashlib.sha256(raw).hexdigest() == sha:
            return path, rel, raw
        seen_other = path
    if seen_other:
        raise SuggestError(f"{seen_other} is not the source the overlay was built from (sha256 {sha[:16]}...): "
                           "its positions would point at other code")
    hint = " (pass --app-root)" if kind == "app" and not app_root else (
        " (run suggest with the interpreter whose site-packages hold it)" if kind == "site-packages" else "")
    raise SuggestError(f"source of {origin} not found{hint}")


def _decode(raw: bytes, path: str) -> tuple[str, str]:
    """``(text, byte-order mark or '')``: the mark is kept out of the text the positions
    number, and put back in the diff."""
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(raw).readline)
    except SyntaxError as exc:
        raise SuggestError(f"{path}: {exc}") from None
    if encoding not in ("utf-8", "utf-8-sig"):
        raise SuggestError(f"{path}: only UTF-8 sources are rewritten (this one declares {encoding})")
    try:
        return raw.decode(encoding), "\ufeff" if raw.startswith(b"\xef\xbb\xbf") else ""
    except UnicodeDecodeError as exc:
        raise SuggestError(f"{path}: not UTF-8: {exc}") from None


# ---------------------------------------------------------------------------- the diff


def unified_diff(old: str, new: str, path: str) -> str:
    """A unified diff of *old* -> *new* for ``a/<path>`` / ``b/<path>`` (``patch -p1``,
    ``git apply``), marking a last line without a newline the way both expect."""
    out = []
    for line in difflib.unified_diff(split_lines(old), split_lines(new), f"a/{path}", f"b/{path}", n=3):
        if line.startswith(("---", "+++")):
            out.append(line.rstrip("\n") + "\n")
        elif line.endswith(("\n", "\r")):
            out.append(line)
        else:
            out.append(line + "\n\\ No newline at end of file\n")
    return "".join(out)


__all__ = ["SuggestError", "Suggestion", "Failure", "FileDiff", "Report", "suggest", "rewrite_source", "unified_diff"]
