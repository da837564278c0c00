"""Sigstore: offline verification of real bundles, and keyless signing up to the
network boundary (this machine cannot reach Fulcio/Rekor; signing is exercised with a
stand-in SigningContext, everything before it is real)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from codesuture.cli.group import cli as main
from codesuture.errors import OverlayRefused, TrustError
from codesuture.ship.sign import SignOptions, sign_sigstore
from codesuture.ship.verify import verify_paths_sigstore as verify_path_sigstore
from codesuture.trust import sigstore_support as ss
from codesuture.trust.policy import LoadPolicy, admit, clear_trust_root_cache
from codesuture.trust.statement import PREDICATE_TYPE
from trust_helpers import APP_MODULES, entry_for, healed_app, make_overlay, shared_dir, sign_overlay

WHEEL = "rfc8785-0.1.2-py3-none-any.whl"
WHEEL_SHA256 = "c4e92e9ecc828bef2aa7dba1de8ac983511f7532a0df11c770d39099a25cf201"
WHEEL_IDENTITY = "https://github.com/trailofbits/rfc8785.py/.github/workflows/release.yml@refs/tags/v0.1.2"
GHA_ISSUER = "https://token.actions.githubusercontent.com"
DSSE_FILE = "a.dsse.staging-rekor-v2.txt"
DSSE_IDENTITY = (
    "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/"
    ".github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main"
)


@pytest.fixture(autouse=True)
def isolated_sigstore_cache(tmp_path, monkeypatch):
    """Offline verification copies the embedded trust root into the user cache/data
    dirs; a stale one would take priority, so each test gets fresh ones."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("CODESUTURE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setattr(ss, "_VERIFIERS", {})
    clear_trust_root_cache()


@pytest.fixture(scope="module")
def healed(tmp_path_factory):
    """A real overlay (``sign`` rebuilds what it signs), healed once per module."""
    return healed_app(tmp_path_factory.mktemp("healed"), {"seta": APP_MODULES["seta"]})


@pytest.fixture
def real_overlay(healed, tmp_path):
    app = tmp_path / "app"
    shutil.copytree(healed[0], app)
    return next((app / "overlays").glob("seta.*.overlay"))


def sign_path_sigstore(paths, *, identity_token, ttl_seconds=None, context=None):
    return sign_sigstore(paths, identity_token=identity_token, options=SignOptions(ttl_seconds=ttl_seconds), context=context)


@pytest.fixture(scope="module")
def shared():
    d = shared_dir()
    if d is None or not (d / "sigstore").is_dir():
        pytest.skip("real Sigstore bundles not available: ../shared/sigstore is absent (set CODESUTURE_SHARED)")
    return d / "sigstore"


@pytest.fixture
def dsse_copy(shared, tmp_path):
    for name in (DSSE_FILE, DSSE_FILE + ".sigstore.json"):
        shutil.copy(shared / name, tmp_path / name)
    return tmp_path / DSSE_FILE


@pytest.fixture(scope="module")
def wheel(shared, tmp_path_factory):
    """The wheel the production bundle signs, downloaded once with pip (skip if it cannot be)."""
    d = tmp_path_factory.mktemp("wheel")
    try:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(d), "rfc8785==0.1.2"],
            check=True, capture_output=True, timeout=120,
        )
    except (subprocess.SubprocessError, OSError) as exc:
        pytest.skip(f"cannot download {WHEEL} with pip (no package index reachable?): {exc}")
    path = d / WHEEL
    if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != WHEEL_SHA256:
        pytest.skip(f"pip did not produce {WHEEL} with the expected digest")
    shutil.copy(shared / (WHEEL + ".sigstore.json"), d / (WHEEL + ".sigstore.json"))
    return path


# ------------------------------------------------------------------ offline verification


def test_dsse_bundle_verifies_offline_on_staging(dsse_copy):
    raw = dsse_copy.with_name(DSSE_FILE + ".sigstore.json").read_bytes()
    statement = ss.verify_statement_bundle(raw, identity=DSSE_IDENTITY, issuer=GHA_ISSUER, staging=True)
    data = json.loads(statement)
    assert data["_type"] == "https://in-toto.io/Statement/v1"
    assert data["subject"][0]["name"] == "a.txt"


def test_dsse_bundle_wrong_identity(dsse_copy):
    raw = dsse_copy.with_name(DSSE_FILE + ".sigstore.json").read_bytes()
    with pytest.raises(TrustError, match="SANs do not match"):
        ss.verify_statement_bundle(raw, identity="https://example.org/someone-else", issuer=GHA_ISSUER, staging=True)


def test_dsse_bundle_against_the_wrong_trust_root(dsse_copy):
    raw = dsse_copy.with_name(DSSE_FILE + ".sigstore.json").read_bytes()
    with pytest.raises(TrustError, match="Sigstore verification failed"):
        ss.verify_statement_bundle(raw, identity=DSSE_IDENTITY, issuer=GHA_ISSUER, staging=False)


def test_tampered_dsse_bundle(dsse_copy):
    raw = json.loads(dsse_copy.with_name(DSSE_FILE + ".sigstore.json").read_bytes())
    raw["dsseEnvelope"]["payload"] = raw["dsseEnvelope"]["payload"].replace("YS50eHQ", "Yi50eHQ")  # a.txt -> b.txt
    with pytest.raises(TrustError, match="Sigstore verification failed|malformed"):
        ss.verify_statement_bundle(json.dumps(raw).encode(), identity=DSSE_IDENTITY, issuer=GHA_ISSUER, staging=True)


def test_malformed_bundle():
    with pytest.raises(TrustError, match="malformed Sigstore bundle"):
        ss.verify_statement_bundle(b"{}", identity="x", issuer="y")


def test_cli_dsse_bundle_checks_subject_against_the_file(dsse_copy):
    # The signature and identity verify, but the statement's subject (a.txt) has
    # another digest than this file: the CLI says exactly that.
    r = CliRunner().invoke(
        main, ["verify", "--sigstore", "--staging", "--cert-identity", DSSE_IDENTITY, "--cert-oidc-issuer", GHA_ISSUER, str(dsse_copy)]
    )
    assert r.exit_code == 1
    assert "no statement subject has this file's sha256 (signature is valid, but for other bytes)" in r.output


def test_wheel_verifies_offline(wheel):
    results = verify_path_sigstore([wheel], identity=WHEEL_IDENTITY, issuer=GHA_ISSUER)
    assert [r.ok for r in results] == [True], results
    r = CliRunner().invoke(
        main, ["verify", "--sigstore", "--cert-identity", WHEEL_IDENTITY, "--cert-oidc-issuer", GHA_ISSUER, str(wheel)]
    )
    assert r.exit_code == 0, r.output


def test_wheel_one_byte_appended(wheel, tmp_path):
    bad = tmp_path / WHEEL
    bad.write_bytes(wheel.read_bytes() + b"\0")
    shutil.copy(wheel.with_name(WHEEL + ".sigstore.json"), tmp_path)
    (res,) = verify_path_sigstore([bad], identity=WHEEL_IDENTITY, issuer=GHA_ISSUER)
    assert not res.ok and "digest mismatch" in res.reason


def test_wheel_wrong_identity(wheel):
    (res,) = verify_path_sigstore([wheel], identity="https://github.com/evil/x/.github/workflows/r.yml@refs/tags/v1", issuer=GHA_ISSUER)
    assert not res.ok and "SANs do not match" in res.reason


def test_missing_bundle(tmp_path):
    f = tmp_path / "lonely.txt"
    f.write_text("x")
    (res,) = verify_path_sigstore([f], identity="i", issuer="j")
    assert not res.ok and "no Sigstore bundle beside it" in res.reason


def test_policy_refuses_a_valid_sigstore_bundle_for_something_else(dsse_copy, tmp_path):
    # A genuine, verifying Sigstore bundle dropped beside an overlay: the signature is
    # fine but the statement is not an overlay attestation, so admit() refuses it.
    overlay = make_overlay(tmp_path / "ov")
    stem = overlay.name[: -len(".overlay")]
    shutil.copy(dsse_copy.with_name(DSSE_FILE + ".sigstore.json"), overlay.with_name(stem + ".sigstore.json"))
    policy = LoadPolicy(sigstore_identity=DSSE_IDENTITY, sigstore_issuer=GHA_ISSUER, sigstore_staging=True)
    with pytest.raises(OverlayRefused, match="wrong predicateType 'https://slsa.dev/provenance/v1'"):
        admit(entry_for(overlay), policy)
    wrong_identity = LoadPolicy(sigstore_identity="https://example.org/x", sigstore_issuer=GHA_ISSUER, sigstore_staging=True)
    with pytest.raises(OverlayRefused, match="SANs do not match"):
        admit(entry_for(overlay), wrong_identity)


# ------------------------------------------------------------------ keyless signing


def _jwt(claims):
    import jwt

    return jwt.encode(claims, "not-a-real-issuer-key-only-for-tests-0123456789", algorithm="HS256")


def _token():
    now = int(time.time())
    return _jwt({
        "iss": "https://oauth2.sigstore.dev/auth", "aud": "sigstore", "sub": "1234",
        "email": "dev@example.org", "iat": now, "nbf": now, "exp": now + 600,
    })


class FakeContext:
    """Stands in for sigstore.sign.SigningContext at the network boundary."""

    def __init__(self):
        self.statements = []

    @contextlib.contextmanager
    def signer(self, token, cache=True):
        ctx = self

        class _Signer:
            def sign_dsse(self, stmt):
                ctx.statements.append((token, stmt._contents))

                class _Bundle:
                    def to_json(self):
                        return json.dumps({"mediaType": "fake", "statement_sha256": hashlib.sha256(stmt._contents).hexdigest()})

                return _Bundle()

        yield _Signer()


def test_sign_sigstore_up_to_the_network_boundary(real_overlay):
    overlay = real_overlay
    ctx = FakeContext()
    (res,) = sign_path_sigstore([overlay], identity_token=_token(), ttl_seconds=3600, context=ctx)
    assert res.ok, res
    assert res.signer == "sigstore:dev@example.org"
    token, statement = ctx.statements[0]
    assert token.identity == "dev@example.org"
    s = json.loads(statement)
    assert s["predicateType"] == PREDICATE_TYPE
    assert s["subject"][0] == {"name": overlay.name, "digest": {"sha256": hashlib.sha256(overlay.read_bytes()).hexdigest()}}
    assert "overlaySet" not in s["predicate"] and s["predicate"]["source"]["origin"] == "app:seta.py"
    written = json.loads(Path(res.output).read_bytes())
    assert Path(res.output).name == overlay.name.replace(".overlay", ".sigstore.json")
    assert written["statement_sha256"] == hashlib.sha256(statement).hexdigest()


def test_sign_sigstore_checks_the_rebuild_first(tmp_path):
    # A hand-made overlay has no source to rebuild it from: nothing reaches the signer.
    overlay = make_overlay(tmp_path)
    ctx = FakeContext()
    (res,) = sign_path_sigstore([overlay], identity_token=_token(), ttl_seconds=3600, context=ctx)
    assert not res.ok and "cannot rebuild it to check it" in res.reason
    assert ctx.statements == [] and not Path(str(overlay).replace(".overlay", ".sigstore.json")).exists()


def test_sigstore_admission_uses_the_verified_statement(real_overlay, monkeypatch):
    # Policy wiring for Sigstore-signed overlays, with the offline verifier stubbed to
    # return the statement the fake signer saw.
    overlay = real_overlay
    ctx = FakeContext()
    (res,) = sign_path_sigstore([overlay], identity_token=_token(), ttl_seconds=3600, context=ctx)
    assert res.ok, res
    statement = ctx.statements[0][1]
    seen = {}

    def fake_verify(raw, *, identity, issuer, staging, path):
        seen.update(identity=identity, issuer=issuer, staging=staging)
        return statement

    monkeypatch.setattr(ss, "verify_statement_bundle", fake_verify)
    policy = LoadPolicy(sigstore_identity="dev@example.org", sigstore_issuer="https://oauth2.sigstore.dev/auth")
    a = admit(entry_for(overlay), policy)
    assert a.signer == "sigstore:dev@example.org" and a.meta.module == "seta" and a.via == "sigstore"
    assert seen == {"identity": "dev@example.org", "issuer": "https://oauth2.sigstore.dev/auth", "staging": False}
    # A stray DSSE envelope beside it changes nothing when no key trust root is configured.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    sign_overlay(overlay, Ed25519PrivateKey.generate())
    assert admit(entry_for(overlay), policy).signer == "sigstore:dev@example.org"
    overlay.write_bytes(overlay.read_bytes() + b"x")
    with pytest.raises(OverlayRefused, match="signed subject digest"):
        admit(entry_for(overlay), policy)
    # Without an issuer the identity alone is not accepted.
    with pytest.raises(OverlayRefused, match="without an OIDC issuer"):
        admit(entry_for(overlay), LoadPolicy(sigstore_identity="dev@example.org"))


def test_no_identity_token(monkeypatch):
    monkeypatch.setattr("sigstore.oidc.detect_credential", lambda *a, **k: None)
    with pytest.raises(TrustError, match="no OIDC identity token"):
        ss.identity_token(None)


def test_expired_identity_token():
    now = int(time.time())
    token = _jwt({"iss": "https://oauth2.sigstore.dev/auth", "aud": "sigstore", "sub": "1", "email": "a@b",
                  "iat": now - 7200, "exp": now - 3600})
    with pytest.raises(TrustError, match="unusable identity token"):
        ss.identity_token(token)


def test_unreachable_services(monkeypatch):
    from sigstore.models import ClientTrustConfig

    def offline(*a, **k):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(ClientTrustConfig, "production", classmethod(lambda cls, *a, **k: offline()))
    with pytest.raises(TrustError, match="cannot reach Sigstore services: no route to host"):
        ss.signing_context()


def test_cli_sign_sigstore_reports_the_boundary(tmp_path, monkeypatch):
    from sigstore.models import ClientTrustConfig

    monkeypatch.setattr(ClientTrustConfig, "production", classmethod(lambda cls, *a, **k: (_ for _ in ()).throw(OSError("offline"))))
    overlay = make_overlay(tmp_path)
    r = CliRunner().invoke(main, ["sign", "--sigstore", "--identity-token", _token(), str(overlay)])
    assert r.exit_code == 1 and "cannot reach Sigstore services" in r.output
    assert not Path(str(overlay).replace(".overlay", ".sigstore.json")).exists()
