"""Keys: generation, key ids, passphrases, the trust root and revocations."""

from __future__ import annotations

import hashlib
import json
import stat

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from codesuture.errors import TrustError
from codesuture.trust import keys


def test_generate_writes_pkcs8_0600_and_spki(tmp_path):
    priv, pub = tmp_path / "signing.pem", tmp_path / "pub" / "ci.pem"
    kid = keys.generate(priv, pub)
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    assert priv.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8, unencrypted
    assert pub.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")  # SubjectPublicKeyInfo
    public = serialization.load_pem_public_key(pub.read_bytes())
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert kid == hashlib.sha256(der).hexdigest() == keys.keyid(public)
    assert len(kid) == 64 and kid == kid.lower()
    private = keys.load_private_key(priv)
    assert keys.keyid(private.public_key()) == kid


def test_generate_encrypted_with_passphrase(tmp_path):
    priv, pub = tmp_path / "s.pem", tmp_path / "p.pem"
    kid = keys.generate(priv, pub, passphrase="correct horse")
    assert priv.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert keys.keyid(keys.load_private_key(priv, "correct horse").public_key()) == kid
    with pytest.raises(TrustError, match="passphrase is needed") as ei:
        keys.load_private_key(priv)
    assert ei.value.path == str(priv)
    with pytest.raises(TrustError, match="wrong passphrase"):
        keys.load_private_key(priv, "wrong")


def test_passphrase_given_for_unencrypted_key(tmp_path):
    keys.generate(tmp_path / "s.pem", tmp_path / "p.pem")
    with pytest.raises(TrustError, match="not encrypted"):
        keys.load_private_key(tmp_path / "s.pem", "x")


@pytest.mark.parametrize("where", ["keys/signing.pem", "keys/sub/signing.pem"])
def test_refuses_private_key_inside_keys_folder(tmp_path, where):
    priv = tmp_path / where
    with pytest.raises(TrustError, match="inside a folder named 'keys'"):
        keys.generate(priv, tmp_path / "pub.pem")
    assert not priv.exists()


def test_refuses_overwrite(tmp_path):
    keys.generate(tmp_path / "s.pem", tmp_path / "p.pem")
    before = (tmp_path / "s.pem").read_bytes()
    with pytest.raises(TrustError, match="already exists"):
        keys.generate(tmp_path / "s.pem", tmp_path / "p2.pem")
    assert (tmp_path / "s.pem").read_bytes() == before


def test_load_private_key_rejects_other_algorithms(tmp_path):
    ec = generate_private_key(SECP256R1())
    p = tmp_path / "ec.pem"
    p.write_bytes(ec.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with pytest.raises(TrustError, match="not an Ed25519 private key"):
        keys.load_private_key(p)
    (tmp_path / "junk.pem").write_bytes(b"junk")
    with pytest.raises(TrustError, match="not a PEM private key"):
        keys.load_private_key(tmp_path / "junk.pem")


def _pub(dirpath, name):
    k = Ed25519PrivateKey.generate()
    (dirpath / name).write_bytes(keys.public_pem(k.public_key()))
    return keys.keyid(k.public_key())


def test_trust_root_loads_pem_and_pub_and_revocations(tmp_path):
    a, b = _pub(tmp_path, "a.pem"), _pub(tmp_path, "b.pub")
    (tmp_path / "README.md").write_text("public keys only")
    (tmp_path / "revoked.json").write_text(json.dumps({"overlays": ["AB" * 32], "keys": [b]}))
    root = keys.TrustRoot.load(tmp_path)
    assert set(root.keys) == {a, b}
    assert all(isinstance(k, Ed25519PublicKey) for k in root.keys.values())
    assert root.revoked_overlays == {"ab" * 32}
    assert root.revoked_keys == {b}
    assert root.is_trusted(a) and not root.is_trusted(b) and not root.is_trusted("0" * 64)


def test_trust_root_without_revocations(tmp_path):
    _pub(tmp_path, "a.pem")
    root = keys.TrustRoot.load(tmp_path)
    assert root.revoked_keys == frozenset() and root.revoked_overlays == frozenset()


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"not json", "not JSON"),
        (b"[]", "must be an object"),
        (b'{"overlays": "abc"}', "must be a list"),
        (b'{"overlays": ["xyz"]}', "malformed entry"),
        (b'{"keys": [12]}', "malformed entry"),
        (b'{"keyz": []}', "unknown fields"),
    ],
)
def test_malformed_revocations_name_the_file(tmp_path, content, reason):
    _pub(tmp_path, "a.pem")
    (tmp_path / "revoked.json").write_bytes(content)
    with pytest.raises(TrustError, match=reason) as ei:
        keys.TrustRoot.load(tmp_path)
    assert ei.value.path == str(tmp_path / "revoked.json")


def test_malformed_public_key_names_the_file(tmp_path):
    (tmp_path / "bad.pem").write_bytes(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    with pytest.raises(TrustError, match="not a PEM public key") as ei:
        keys.TrustRoot.load(tmp_path)
    assert ei.value.path == str(tmp_path / "bad.pem")


def test_private_key_in_trust_root_is_an_error(tmp_path):
    k = Ed25519PrivateKey.generate()
    (tmp_path / "oops.pem").write_bytes(
        k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    with pytest.raises(TrustError, match="PRIVATE key") as ei:
        keys.TrustRoot.load(tmp_path)
    assert ei.value.path == str(tmp_path / "oops.pem")


def test_non_ed25519_public_key_refused(tmp_path):
    ec = generate_private_key(SECP256R1()).public_key()
    (tmp_path / "ec.pem").write_bytes(ec.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    with pytest.raises(TrustError, match="not an Ed25519 public key"):
        keys.TrustRoot.load(tmp_path)


def test_missing_trust_root_dir(tmp_path):
    with pytest.raises(TrustError, match="does not exist") as ei:
        keys.TrustRoot.load(tmp_path / "nope")
    assert ei.value.path == str(tmp_path / "nope")


@pytest.mark.parametrize("name", ["ci.pem", "revoked.json"])
def test_fifo_in_the_trust_root_does_not_block(tmp_path, name):
    import os

    from trust_helpers import deadline

    if name != "ci.pem":
        _pub(tmp_path, "a.pem")
    os.mkfifo(tmp_path / name)
    with deadline(5), pytest.raises(TrustError, match="is a FIFO") as ei:
        keys.TrustRoot.load(tmp_path)
    assert ei.value.path == str(tmp_path / name)


def test_oversized_key_file(tmp_path):
    with open(tmp_path / "big.pem", "wb") as fh:
        fh.truncate(keys.MAX_KEY_FILE_BYTES + 1)
    with pytest.raises(TrustError, match="oversized") as ei:
        keys.TrustRoot.load(tmp_path)
    assert ei.value.path == str(tmp_path / "big.pem")


def test_hidden_files_are_ignored_and_the_path_is_kept(tmp_path):
    a = _pub(tmp_path, "a.pem")
    (tmp_path / ".draft.pem").write_bytes(b"junk")
    root = keys.TrustRoot.load(tmp_path)
    assert set(root.keys) == {a} and root.path == str(tmp_path)
    assert repr(root) == f"TrustRoot(1 key(s), path={tmp_path})"
