"""in-toto Statement v1 for overlays: build, validate with sigstore, read back."""

from __future__ import annotations

import hashlib
import json

import pytest
from sigstore.dsse import Statement

from codesuture.errors import TrustError
from codesuture.overlay.model import OverlayMeta
from codesuture.trust.statement import PREDICATE_TYPE, STATEMENT_TYPE, build_statement, meta_from_statement
from codesuture.util.clock import iso_utc
from trust_helpers import make_overlay

NOW = 1_800_000_000.0


@pytest.fixture
def overlay(tmp_path):
    path = make_overlay(tmp_path)
    meta = OverlayMeta.loads(path.with_suffix(".json").read_bytes())
    return path, meta


def test_statement_shape(overlay):
    path, meta = overlay
    data = path.read_bytes()
    raw = build_statement(meta, path.name, data, 7 * 86400, now=NOW)
    Statement(raw)  # sigstore's own validation of in-toto Statement v1
    s = json.loads(raw)
    assert s["_type"] == STATEMENT_TYPE == "https://in-toto.io/Statement/v1"
    assert s["predicateType"] == PREDICATE_TYPE == "https://codesuture.dev/attestation/overlay/v1"
    assert s["subject"] == [{"name": path.name, "digest": {"sha256": hashlib.sha256(data).hexdigest()}}]
    p = s["predicate"]
    assert p["module"] == p["key"] == "demo.mod"
    assert p["source"] == {"sha256": meta.source_sha256, "origin": meta.origin}
    assert set(p["interpreter"]) == {"implementation", "version", "cache_tag", "magic"}
    assert p["patches"] == [r.to_json() for r in meta.patches]
    assert p["createdAt"] == meta.created
    assert p["expiresAt"] == iso_utc(NOW + 7 * 86400)
    assert p["tier"] == "auto" and p["evidence"] == []


def test_roundtrip_to_meta(overlay):
    path, meta = overlay
    data = path.read_bytes()
    raw = build_statement(meta, path.name, data, 3600, now=NOW, evidence=[{"repro": "ok"}])
    back, digest, set_name = meta_from_statement(raw, path.name)
    assert set_name is None and "overlaySet" not in json.loads(raw)["predicate"]
    assert digest == hashlib.sha256(data).hexdigest() == back.overlay_sha256
    assert back.expires == iso_utc(NOW + 3600)
    assert (back.module, back.key, back.origin, back.source_sha256, back.python, back.tier) == (
        meta.module, meta.key, meta.origin, meta.source_sha256, meta.python, meta.tier
    )
    assert back.patches == meta.patches


def test_default_ttl_keeps_metadata_expiry(overlay):
    path, meta = overlay
    meta = meta._replace(expires="2030-01-01T00:00:00Z")
    raw = build_statement(meta, path.name, path.read_bytes(), now=NOW)
    assert json.loads(raw)["predicate"]["expiresAt"] == "2030-01-01T00:00:00Z"
    meta = meta._replace(expires="")
    raw = build_statement(meta, path.name, path.read_bytes(), now=NOW)
    assert json.loads(raw)["predicate"]["expiresAt"] == iso_utc(NOW + 30 * 86400)


def test_build_refuses_bytes_that_do_not_match_metadata(overlay):
    path, meta = overlay
    with pytest.raises(TrustError, match="do not match"):
        build_statement(meta, path.name, path.read_bytes() + b"x", 60)
    with pytest.raises(TrustError, match="TTL must be positive"):
        build_statement(meta, path.name, path.read_bytes(), 0)


def _mutate(raw, fn):
    s = json.loads(raw)
    fn(s)
    return json.dumps(s).encode()


@pytest.mark.parametrize(
    "mutation, reason",
    [
        (lambda s: s.update(predicateType="https://slsa.dev/provenance/v1"), "wrong predicateType"),
        (lambda s: s.update(_type="https://in-toto.io/Statement/v0.1"), "not an in-toto Statement v1"),
        (lambda s: s["subject"].append(dict(s["subject"][0])), "exactly one subject"),
        (lambda s: s["subject"][0].update(name="other.overlay"), "is not this overlay"),
        (lambda s: s["subject"][0].update(digest={"sha512": "ab"}), "SHA-256"),
        (lambda s: s["predicate"].update(expiresAt="tomorrow"), "expiresAt"),
        (lambda s: s["predicate"].pop("source"), "source/interpreter"),
        (lambda s: s["predicate"].update(patches=[{"qualname": "f"}]), "malformed patch record"),
        (lambda s: s["predicate"].update(patches={}), "patches must be a list"),
        (lambda s: s["predicate"].update(overlaySet=""), "overlaySet must be a set name"),
        (lambda s: s["predicate"].update(overlaySet=["demo"]), "overlaySet must be a set name"),
        (lambda s: s["predicate"]["source"].update(sha256="AB" * 32), "source.sha256"),
        (lambda s: s["predicate"]["interpreter"].update(version=3), "interpreter fields must be strings"),
        (lambda s: s["predicate"].update(createdAt="2027-01-15 08:00:00"), "createdAt"),
        (lambda s: s["predicate"].pop("module"), "'module' missing"),
        (lambda s: s.pop("predicate"), "no predicate|Statement"),
    ],
)
def test_meta_from_statement_refusals(overlay, mutation, reason):
    path, meta = overlay
    raw = build_statement(meta, path.name, path.read_bytes(), 60, now=NOW)
    with pytest.raises(TrustError, match=reason) as ei:
        meta_from_statement(_mutate(raw, mutation), path.name)
    assert ei.value.path == path.name
    with pytest.raises(TrustError, match=reason):  # the loader's own checks, without sigstore's models
        meta_from_statement(_mutate(raw, mutation), path.name, strict=False)


def test_overlay_set_name_roundtrip(overlay):
    path, meta = overlay
    raw = build_statement(meta, path.name, path.read_bytes(), 60, now=NOW, overlay_set="inventory")
    assert json.loads(raw)["predicate"]["overlaySet"] == "inventory"
    back, _, set_name = meta_from_statement(raw, path.name)
    assert set_name == "inventory" and back.module == meta.module


def test_statement_carries_no_machine_path(overlay):
    path, meta = overlay
    raw = build_statement(meta, path.name, path.read_bytes(), 60, now=NOW)
    assert json.loads(raw)["predicate"]["source"]["origin"] == "app:demo/mod.py"
    assert str(path.parent).encode() not in raw
