"""CycloneDX SBOM of a store or bundle: what ``codesuture sbom`` and ``bundle create --sbom`` write.

One document (CycloneDX :data:`SPEC_VERSION`, JSON, made with ``cyclonedx-python-lib``
and validated with its own strict JSON schema validator before anything is written):

* one ``library`` component per installed distribution that overlays modify (the
  ``package`` its overlays record: PEP 503 name, version, ``purl`` ``pkg:pypi/NAME@VERSION``;
  names and versions normalized again with ``packaging`` when it is installed). Its
  ``pedigree.patches`` list every patch of every overlay of that package, each of type
  ``unofficial``, with a ``diff`` whose text says what the patch is (guard, site
  ``module:line qualname``, instruction, expression, the exception it healed, what it
  yields, the overlay file and source digests) and a ``resolves`` issue (the crash, a
  ``defect``); its nested ``file`` components are the overlays themselves: SHA-256 of
  the overlay file, ``pedigree.ancestors`` the source file it was built from with its
  SHA-256, and ``codesuture:*`` properties (module, key, origin, interpreter, tier,
  expiry, where the metadata came from);
* an overlay of an app module (origin ``app:``), or one whose metadata records no
  package, is a top-level ``file`` component of its own, with its patches in its own
  ``pedigree``;
* ``metadata.component`` is the store (``application``: the signed set's name and
  version when it has one), depending on every top-level component; ``metadata.tools``
  names CodeSuture.

The metadata of each overlay is read the way ``codesuture explain`` reads it (the
Statement in its envelope, verified when ``keys_dir`` is given; the sidecar only for
an unsigned overlay), and the overlay bytes must match its digest. Serial number and
timestamp derive from the contents (the signed set's ``createdAt``, else the newest
overlay's), so the same store gives the same document.

The SBOM in a bundle (``sbom.cdx.json``) is not signed and not pinned by the signed
set: it is informational, never read by the loader, and ``codesuture sbom BUNDLE``
regenerates it from the signed contents for comparison.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from dataclasses import dataclass
from typing import Any, Iterable

from codesuture.errors import CodeSutureError

#: CycloneDX specification version written.
SPEC_VERSION = "1.6"
#: The ``pedigree.patches[].type`` of every CodeSuture patch.
PATCH_TYPE = "unofficial"


class SbomError(CodeSutureError):
    """The SBOM cannot be made: the library is missing, an overlay is unreadable or
    does not match its metadata, or the document does not validate."""


@dataclass(frozen=True)
class SbomInfo:
    """A written SBOM: where, its CycloneDX version, top-level components (packages and
    app overlays), overlays and patches described."""

    path: str
    spec_version: str
    components: int
    overlays: int
    patches: int


@dataclass(frozen=True)
class _Overlay:
    stem: str
    meta: Any
    digest: str
    where: str


def _cyclonedx() -> Any:
    try:
        import cyclonedx  # noqa: F401
    except ImportError:
        raise SbomError("SBOMs need cyclonedx-python-lib: pip install 'codesuture[sbom]'") from None
    return cyclonedx


def normalize(name: str, version: str) -> tuple[str, str]:
    """``(name, version)`` normalized with ``packaging`` (canonical name, PEP 440
    version) when it is installed and the version parses; else PEP 503 name and the
    recorded version."""
    from codesuture.overlay.package import normalize_name

    try:
        from packaging.utils import canonicalize_name
        from packaging.version import InvalidVersion, Version
    except ImportError:
        return normalize_name(name), version
    try:
        version = str(Version(version))
    except InvalidVersion:
        pass
    return str(canonicalize_name(name)), version


def _overlays(store: Any, entries: Iterable[Any], keys_dir: str | None) -> list[_Overlay]:
    from codesuture.overlay.names import OVERLAY_SUFFIX
    from codesuture.ship.metadata import signed_meta

    out = []
    for entry in sorted(entries, key=lambda e: e.name):
        meta, where = signed_meta(entry, keys_dir)
        data = entry.read(OVERLAY_SUFFIX)
        if data is None:
            raise SbomError(f"{entry.path(OVERLAY_SUFFIX)}: overlay file is missing")
        digest = hashlib.sha256(data).hexdigest()
        if digest != meta.overlay_sha256:
            raise SbomError(f"{entry.path(OVERLAY_SUFFIX)}: overlay bytes do not match the digest its metadata "
                            f"({where}) records: not described")
        out.append(_Overlay(entry.name, meta, digest, where))
    return out


def _store_of(target: str) -> Any:
    from codesuture.overlay.names import OVERLAY_SUFFIX
    from codesuture.store.directory import DirectoryStore
    from codesuture.store.kinds import open_store

    if not os.path.exists(target):
        raise SbomError(f"{target}: no such file or folder")
    if os.path.isfile(target) and target.endswith(OVERLAY_SUFFIX):
        raise SbomError(f"{target}: give the folder or bundle that holds it")
    store = open_store(target)
    return DirectoryStore(target, budget=None) if store.kind == "directory" else store


def _set_info(store: Any, keys_dir: str | None) -> dict[str, Any] | None:
    """Name, version, createdAt of the store's signed set (verified with *keys_dir*
    when given), or None when it has none."""
    from codesuture.overlay.names import MAX_SET_BYTES, SET_NAME
    from codesuture.trust.dsse import Envelope
    from codesuture.trust.overlay_set import parse_set_statement, verify_set

    raw = store.read(SET_NAME, MAX_SET_BYTES)
    if raw is None:
        return None
    where = store.display(SET_NAME)
    if keys_dir:
        from codesuture.trust.keys import TrustRoot

        vset = verify_set(raw, TrustRoot.load(keys_dir), where)
        verified = True
    else:
        env = Envelope.loads(raw, where)
        vset = parse_set_statement(env.payload, env.signatures[0].keyid if env.signatures else "", where)
        verified = False
    return {"name": vset.name, "version": vset.version, "created": vset.created, "verified": verified,
            "overlays": set(vset.overlays)}


def _site(meta: Any, p: Any) -> str:
    """``module:line qualname`` (a script: its origin path instead of ``__main__``)."""
    where = meta.origin.partition(":")[2] if meta.module == "__main__" and meta.origin else meta.module
    return f"{where}:{p.line} {p.qualname}"


def _patch_text(ov: _Overlay, p: Any) -> str:
    meta = ov.meta
    guard = p.guard.guard + (f"/{p.guard.form}" if p.guard.form else "")
    lines = [
        f"CodeSuture patch: {guard} at {_site(meta, p)} ({p.opname} at offset {p.offset} of the unpatched code)",
        f"expression: {p.expression or '(not recorded)'}",
        f"healed: {p.exception}",
        f"yields: {p.yields}",
        f"instructions: +{p.added} -{p.removed}",
        f"created: {p.created or '?'}  expires: {p.expires or 'never'}",
        f"overlay: {ov.stem}.overlay sha256 {ov.digest}",
        f"source: {meta.origin or meta.module} sha256 {meta.source_sha256}",
        f"interpreter: {meta.python.get('cache_tag', '?')}  tier: {meta.tier}",
    ]
    return "\n".join(lines) + "\n"


def _patches(ov: _Overlay) -> list[Any]:
    from cyclonedx.model import AttachedText
    from cyclonedx.model.component import Diff, Patch, PatchClassification
    from cyclonedx.model.issue import IssueClassification, IssueType

    out = []
    for p in ov.meta.patches:
        issue = IssueType(type=IssueClassification.DEFECT, id=f"{ov.stem}@{p.qualname}:{p.offset}",
                          name=str(p.exception).partition(":")[0] or "crash",
                          description=f"{p.exception} at {_site(ov.meta, p)}, healed by a CodeSuture guard")
        out.append(Patch(type=PatchClassification(PATCH_TYPE),
                         diff=Diff(text=AttachedText(content=_patch_text(ov, p), content_type="text/plain")),
                         resolves=[issue]))
    return out


def _sha256(hexdigest: str) -> Any:
    from cyclonedx.model import HashAlgorithm, HashType

    return HashType(alg=HashAlgorithm.SHA_256, content=hexdigest)


def _overlay_component(ov: _Overlay, with_patches: bool) -> Any:
    from cyclonedx.model import Property
    from cyclonedx.model.component import Component, ComponentType, Pedigree

    meta = ov.meta
    source = Component(type=ComponentType.FILE, name=meta.origin or meta.module, bom_ref=f"codesuture-source:{ov.stem}",
                       hashes=[_sha256(meta.source_sha256)],
                       description=f"source of {meta.module} the overlay was built from (unchanged on disk)")
    props = {
        "codesuture:module": meta.module, "codesuture:key": meta.key, "codesuture:origin": meta.origin,
        "codesuture:cache_tag": meta.python.get("cache_tag", ""), "codesuture:python": meta.python.get("version", ""),
        "codesuture:tier": meta.tier, "codesuture:expires": meta.expires or "never",
        "codesuture:metadata": ov.where, "codesuture:patches": str(len(meta.patches)),
    }
    if meta.package is None and not meta.origin.startswith("app:"):
        props["codesuture:package"] = "not recorded"
    return Component(
        type=ComponentType.FILE, name=f"{ov.stem}.overlay", bom_ref=f"codesuture-overlay:{ov.stem}",
        hashes=[_sha256(ov.digest)],
        description=f"CodeSuture overlay: {meta.module} with {len(meta.patches)} patch(es), loaded instead of its "
                    f"compiled source on {meta.python.get('cache_tag', '?')}",
        properties=[Property(name=k, value=v) for k, v in props.items() if v],
        pedigree=Pedigree(ancestors=[source], patches=_patches(ov) if with_patches else None),
    )


def _serial(overlays: list[_Overlay], set_info: dict[str, Any] | None) -> uuid.UUID:
    basis = json.dumps([[o.stem, o.digest] for o in overlays] + [[set_info and set_info["name"], set_info and set_info["version"]]])
    return uuid.uuid5(uuid.NAMESPACE_URL, "https://codesuture.dev/sbom/" + hashlib.sha256(basis.encode()).hexdigest())


def _timestamp(overlays: list[_Overlay], set_info: dict[str, Any] | None) -> Any:
    import datetime

    from codesuture.util.clock import is_iso_utc, parse_iso_utc

    times = [set_info["created"]] if set_info else [o.meta.created for o in overlays if is_iso_utc(o.meta.created)]
    epoch = parse_iso_utc(max(times)) if times else None
    if epoch is None:
        return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc)


def build_bom(store: Any, *, keys_dir: str | None = None, stems: Iterable[str] | None = None) -> tuple[Any, dict[str, int]]:
    """The ``cyclonedx.model.bom.Bom`` of *store* (a directory or bundle store) and its
    counts. *stems*: only these overlays (default: every overlay of the store, or the
    ones its signed set lists when it has one). Raises :class:`SbomError` or another
    :class:`CodeSutureError` naming the file."""
    _cyclonedx()
    from cyclonedx.model import Property
    from cyclonedx.model.bom import Bom, BomMetaData
    from cyclonedx.model.component import Component, ComponentType, Pedigree
    from packageurl import PackageURL

    from codesuture import __version__

    set_info = _set_info(store, keys_dir)
    keep = set(stems) if stems is not None else (set_info["overlays"] if set_info else None)
    entries = [e for es in store.index().values() for e in es if keep is None or e.name in keep]
    overlays = _overlays(store, entries, keys_dir)
    by_package: dict[tuple[str, str], list[_Overlay]] = {}
    top: list[Any] = []
    for ov in overlays:
        pkg = ov.meta.package
        if pkg and not ov.meta.origin.startswith("app:"):
            by_package.setdefault(normalize(pkg["name"], pkg["version"]), []).append(ov)
        else:
            top.append(_overlay_component(ov, with_patches=True))
    for (name, version), ovs in sorted(by_package.items()):
        purl = PackageURL(type="pypi", name=name, version=version)
        top.append(Component(
            type=ComponentType.LIBRARY, name=name, version=version, purl=purl, bom_ref=purl.to_string(),
            description=f"installed distribution, modified at import time by {len(ovs)} CodeSuture overlay(s)",
            pedigree=Pedigree(patches=[p for ov in ovs for p in _patches(ov)],
                              notes="Patched by CodeSuture overlays (code-object overlays loaded instead of the "
                                    "compiled source; the installed files are unchanged): "
                                    + ", ".join(f"{ov.stem}.overlay" for ov in ovs)),
            components=[_overlay_component(ov, with_patches=False) for ov in ovs],
        ))
    name = set_info["name"] if set_info else os.path.basename(os.path.abspath(store.location).rstrip(os.sep)) or "overlays"
    root_props = [Property(name="codesuture:store", value=store.kind)]
    if set_info:
        root_props.append(Property(name="codesuture:signed-set",
                                   value=f"{set_info['name']} v{set_info['version']} "
                                         f"({'verified' if set_info['verified'] else 'not verified: pass --keys'})"))
    root = Component(type=ComponentType.APPLICATION, name=name, bom_ref="codesuture-store",
                     version=str(set_info["version"]) if set_info else None,
                     description="the overlay store: what CodeSuture loads into this application",
                     properties=root_props)
    tool = Component(type=ComponentType.APPLICATION, name="codesuture", version=__version__,
                     bom_ref="codesuture-tool")
    bom = Bom(components=top, serial_number=_serial(overlays, set_info),
              metadata=BomMetaData(component=root, timestamp=_timestamp(overlays, set_info)))
    bom.metadata.tools.components.add(tool)
    bom.register_dependency(root, top)
    for c in top:
        bom.register_dependency(c)
    counts = {"components": len(top), "overlays": len(overlays), "patches": sum(len(o.meta.patches) for o in overlays)}
    return bom, counts


def validate(text: str) -> None:
    """Validate CycloneDX JSON *text* with ``cyclonedx-python-lib``'s strict schema
    validator for :data:`SPEC_VERSION`. Raises :class:`SbomError` with the first error."""
    _cyclonedx()
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    error = JsonStrictValidator(SchemaVersion.from_version(SPEC_VERSION)).validate_str(text)
    if error is not None:
        raise SbomError(f"the SBOM does not validate against CycloneDX {SPEC_VERSION}: {error}")


def render(store: Any, *, keys_dir: str | None = None, stems: Iterable[str] | None = None) -> tuple[str, dict[str, int]]:
    """``(CycloneDX JSON text, counts)`` of *store*, validated (see :func:`validate`)."""
    import warnings

    _cyclonedx()
    from cyclonedx.output.json import JsonV1Dot6

    bom, counts = build_bom(store, keys_dir=keys_dir, stems=stems)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the library's own integrity warnings are errors here
        try:
            text = JsonV1Dot6(bom).output_as_string(indent=2)
        except Exception as exc:  # noqa: BLE001 - the library's model checks (and warnings)
            raise SbomError(f"the SBOM cannot be serialized: {exc}") from None
    validate(text)
    return text + "\n", counts


def write_sbom(target: str | os.PathLike[str], output: str | os.PathLike[str], *, keys_dir: str | None = None) -> SbomInfo:
    """Write the validated CycloneDX SBOM of *target* (a folder or a bundle) to
    *output*, atomically. Raises :class:`SbomError` or another
    :class:`CodeSutureError` naming the file; nothing is written then."""
    from codesuture.util.files import atomic_write

    store = _store_of(os.fspath(target))
    try:
        text, counts = render(store, keys_dir=keys_dir)
    finally:
        close = getattr(store, "close", None)
        if close is not None:
            close()
    try:
        path = atomic_write(output, text.encode("utf-8"))
    except OSError as exc:
        raise SbomError(f"{os.fspath(output)}: cannot write: {exc.strerror or exc}") from None
    return SbomInfo(str(path), SPEC_VERSION, counts["components"], counts["overlays"], counts["patches"])


__all__ = ["SbomError", "SbomInfo", "SPEC_VERSION", "PATCH_TYPE", "build_bom", "render", "validate", "write_sbom",
           "normalize"]
