"""The signed overlay set is the truth of a store (design rule 10, TUF's snapshot).

Three parts:

* the set Statement itself (:mod:`codesuture.trust.overlay_set`): what is built and
  what a verified payload must look like;
* admission under a set, in process at the ``admit()`` level: every refusal is an
  :class:`OverlayRefused` with a precise reason, and ``marshal.loads`` is never
  reached (the autouse fixture makes any call outside the import system fail);
* the real finder over a folder healed by ``codesuture run`` and signed by
  ``sign_folder`` (rebuild check included): one verification per store, and a
  tampered set refuses the whole store (it no longer falls back to each envelope).
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import json
import re
import shutil
import sys

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from codesuture.errors import OverlayRefused, TrustError
from codesuture.overlay.names import SET_NAME
from codesuture.trust import dsse
from codesuture.trust import policy as policy_mod
from codesuture.trust.keys import TrustRoot
from codesuture.trust.overlay_set import (
    PREDICATE_TYPE, STATEMENT_TYPE, build_set_statement, parse_set_statement, unverified_version, verify_set,
)
from codesuture.trust.policy import LoadPolicy, admit, clear_trust_root_cache, full_meta, store_set
from codesuture.trust.state import HostState
from codesuture.util.clock import iso_utc
from trust_helpers import (
    entry_for, forbid_unmarshal, healed_app, make_overlay, make_signed_set, sign_folder_raw, sign_overlay,
)

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z
DAY = 86400


@pytest.fixture(scope="module")
def warmed_up(tmp_path_factory):
    """One full admission under a set first: the lazy imports it triggers read .pyc files."""
    s = make_signed_set(tmp_path_factory.mktemp("warm"), now=NOW, ttl_seconds=DAY)
    admit(s.entry(), s.policy(strict_statements=True), NOW)
    clear_trust_root_cache()


@pytest.fixture
def no_unmarshal(monkeypatch, warmed_up):
    calls = forbid_unmarshal(monkeypatch)
    clear_trust_root_cache()
    yield calls
    clear_trust_root_cache()
    assert calls == [], "marshal.loads reached from admit()"


@pytest.fixture
def s(tmp_path, no_unmarshal):
    """Two hand-made overlays signed into set 'demo' v1 (overlays expire NOW + 1 day)."""
    return make_signed_set(tmp_path, now=NOW, ttl_seconds=DAY)


def refused(s, reason, module="demo.mod", now=NOW, policy=None):
    clear_trust_root_cache()
    with pytest.raises(OverlayRefused) as ei:
        admit(s.entry(module), policy or s.policy(), now)
    assert ei.value.path == s.entry(module).name
    assert re.search(reason, ei.value.reason), ei.value.reason
    return ei.value.reason


def admitted(s, module="demo.mod", now=NOW, policy=None):
    clear_trust_root_cache()
    return admit(s.entry(module), policy or s.policy(), now)


def stem(s, module="demo.mod"):
    return s.entry(module).name


# ------------------------------------------------------------------------ the Statement


def test_set_statement_shape(s):
    raw = s.set_path.read_bytes()
    env = dsse.Envelope.loads(raw)
    assert env.payload_type == dsse.INTOTO_PAYLOAD_TYPE
    st = json.loads(env.payload)
    assert st["_type"] == STATEMENT_TYPE and st["predicateType"] == PREDICATE_TYPE
    pred = st["predicate"]
    assert (pred["name"], pred["version"], pred["createdAt"]) == ("demo", 1, iso_utc(NOW))
    assert pred["expiresAt"] == iso_utc(NOW + DAY)  # the latest overlay expiry by default
    # Subjects: every file of every overlay, with its SHA-256.
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in s.directory.iterdir()
             if p.name != SET_NAME and not p.name.startswith(".")}
    assert len(files) == 6
    assert {x["name"]: x["digest"]["sha256"] for x in st["subject"]} == files
    info = pred["overlays"][stem(s)]
    assert info["files"] == sorted(n for n in files if n.startswith(stem(s) + "."))
    assert info["key"] == info["module"] == "demo.mod" and info["expiresAt"] == iso_utc(NOW + DAY)
    vset = verify_set(raw, TrustRoot.load(s.keys_dir), s.set_path)
    assert (vset.name, vset.version, vset.keyid) == ("demo", 1, s.keyid)
    assert vset.files == files and set(vset.overlays) == {stem(s), stem(s, "pkg.other")}
    assert unverified_version(raw) == 1


def test_each_signing_raises_the_version(s):
    assert s.resign().reason == "signed overlay set 'demo' v2: 2 overlay(s)"
    assert unverified_version(s.set_path.read_bytes()) == 2
    assert unverified_version(b"junk") == 0 and unverified_version(None) == 0


@pytest.mark.parametrize("name", ["", "-x", "a/b", "x" * 129, "a b", "../up"])
def test_build_refuses_bad_set_names(name):
    with pytest.raises(TrustError, match="invalid overlay set name"):
        build_set_statement(name, 1, iso_utc(NOW), iso_utc(NOW), {})


def test_build_refuses_bad_versions_and_files(tmp_path):
    with pytest.raises(TrustError, match="out of range"):
        build_set_statement("demo", 0, iso_utc(NOW), iso_utc(NOW), {})
    overlay = make_overlay(tmp_path)
    st = overlay.name[: -len(".overlay")]
    fields = {f: "x" for f in ("key", "module", "source_sha256", "cache_tag", "magic", "expiresAt", "tier")}
    with pytest.raises(TrustError, match="lacks its .overlay file"):
        build_set_statement("demo", 1, iso_utc(NOW), iso_utc(NOW), {st: (fields, {st + ".json": b"{}"})})
    with pytest.raises(TrustError, match="is not a file of overlay"):
        build_set_statement("demo", 1, iso_utc(NOW), iso_utc(NOW),
                            {st: (fields, {st + ".overlay": b"x", "other.cpython-3.0123456789abcdef.json": b"{}"})})


def _payload(s):
    return json.loads(dsse.Envelope.loads(s.set_path.read_bytes()).payload)


@pytest.mark.parametrize(
    "mutate, reason",
    [
        (lambda p: p.update(_type="x"), "not an in-toto Statement v1"),
        (lambda p: p.update(predicateType="https://codesuture.dev/attestation/overlay-set/v1"), "predicateType"),
        (lambda p: p["predicate"].update(name="a b"), "invalid name"),
        (lambda p: p["predicate"].update(version=0), "invalid version"),
        (lambda p: p["predicate"].update(version=True), "invalid version"),
        (lambda p: p["predicate"].update(version="2"), "invalid version"),
        (lambda p: p["predicate"].update(expiresAt="tomorrow"), "RFC 3339"),
        (lambda p: p["predicate"].update(overlays=[]), "no overlays object"),
        (lambda p: p["subject"].append(dict(p["subject"][0])), "duplicate subject"),
        (lambda p: p["subject"][0]["digest"].update(sha256="AB" * 32), "malformed or duplicate subject"),
        (lambda p: p["subject"].append({"name": "../x.overlay", "digest": {"sha256": "a" * 64}}), "not an overlay file"),
        (lambda p: p["subject"].pop(), "disagree|malformed file list"),
        (lambda p: next(iter(p["predicate"]["overlays"].values())).pop("magic"), "lacks one of"),
        (lambda p: next(iter(p["predicate"]["overlays"].values())).update(key="other.mod"), "names key"),
        (lambda p: next(iter(p["predicate"]["overlays"].values()))["files"].append("x.y.0123456789abcdef.json"),
         "malformed file list"),
    ],
)
def test_parse_refuses_malformed_payloads(s, mutate, reason):
    payload = _payload(s)
    mutate(payload)
    with pytest.raises(TrustError, match=reason) as ei:
        parse_set_statement(json.dumps(payload).encode(), s.keyid, "where")
    assert ei.value.path == "where"


# ------------------------------------------------------------------ admission under a set


def test_a_signed_set_admits_what_it_pins(s):
    for module in ("demo.mod", "pkg.other"):
        a = admitted(s, module)
        assert a.via == "set" and a.signer == s.keyid
        assert a.overlay_bytes == s.overlay(module).read_bytes()
        assert a.meta.module == module and a.meta.expires == iso_utc(NOW + DAY)
        assert a.meta.patches == []  # the set carries no patch list ...
        full = full_meta(s.entry(module), a, s.policy())
        assert [p.qualname for p in full.patches] == ["f"]  # ... the pinned envelope does


def test_one_signature_verification_per_store(s, monkeypatch):
    calls = []
    real = dsse.verify
    monkeypatch.setattr(dsse, "verify", lambda *a, **k: calls.append(a[3] if len(a) > 3 else k.get("path")) or real(*a, **k))
    clear_trust_root_cache()
    for _ in range(3):
        for module in ("demo.mod", "pkg.other"):
            assert admit(s.entry(module), s.policy(), NOW).via == "set"
    assert calls == [str(s.set_path)]


def test_unlisted_overlay_is_refused(s):
    planted = make_overlay(s.directory, module="evil.mod")
    with pytest.raises(OverlayRefused, match=r"not in the signed overlay set 'demo' v1 \(withdrawn, or planted\)"):
        admit(entry_for(planted), s.policy(), NOW)
    # Its own envelope signed by the trusted key does not help: the set is the truth.
    sign_overlay(planted, s.key, ttl_seconds=DAY, now=NOW)
    clear_trust_root_cache()
    with pytest.raises(OverlayRefused, match="not in the signed overlay set"):
        admit(entry_for(planted), s.policy(), NOW)
    admitted(s)  # the listed overlays still load


def test_unlisted_overlay_costs_no_read(s):
    # Refused from the set alone: a FIFO planted under an overlay name is never opened.
    import os

    planted = s.directory / "evil.mod.{}.0123456789abcdef.overlay".format(sys.implementation.cache_tag)
    os.mkfifo(planted)
    with pytest.raises(OverlayRefused, match="not in the signed overlay set"):
        admit(entry_for(planted), s.policy(), NOW)


def test_other_source_version_of_a_listed_module_is_refused(s):
    other = make_overlay(s.directory, module="demo.mod", source=b"def f(x):\n    return 1\n")
    assert other != s.overlay()
    with pytest.raises(OverlayRefused, match="not in the signed overlay set"):
        admit(entry_for(other), s.policy(), NOW)


def _flip_last(path):
    data = bytearray(path.read_bytes())
    data[-2] ^= 1
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["edited", "missing"])
@pytest.mark.parametrize("suffix", [".overlay", ".json", ".dsse.json"])
def test_any_pinned_file_changed_or_missing_is_refused(s, suffix, how):
    target = s.file("demo.mod", suffix)
    if how == "edited":
        _flip_last(target)
    else:
        target.unlink()
    name = stem(s) + suffix
    if suffix == ".overlay":
        reason = {"edited": r"overlay bytes do not match the signed overlay set 'demo' v1 \(tampered or replaced\)",
                  "missing": "overlay file is missing"}[how]
    else:
        reason = {"edited": rf"^{name} does not match the signed overlay set 'demo' v1 \(tampered or replaced\)",
                  "missing": rf"^{name} is missing, but the signed overlay set pins it"}[how]
    refused(s, reason)
    admitted(s, "pkg.other")  # only the overlay whose file changed is refused


def test_sidecar_problem_refuses_before_the_overlay_is_read(s, monkeypatch):
    _flip_last(s.file("demo.mod", ".json"))
    reads = []
    entry = s.entry()
    real = entry.store.read
    monkeypatch.setattr(entry.store, "read", lambda name, limit: reads.append(name) or real(name, limit))
    clear_trust_root_cache()
    with pytest.raises(OverlayRefused, match="does not match the signed overlay set"):
        admit(entry, s.policy(), NOW)
    assert stem(s) + ".overlay" not in reads and SET_NAME in reads


def test_side_files_are_read_for_the_overlay_admitted_only(s, monkeypatch):
    """A start pays for the overlays it imports: admitting one reads and hashes its own
    pinned side files (once per set), never those of the other overlays the set lists;
    a tampered side file of another overlay refuses that overlay alone, when it comes."""
    from codesuture.store.directory import DirectoryStore

    _flip_last(s.file("pkg.other", ".dsse.json"))
    reads = []
    real = DirectoryStore.read
    monkeypatch.setattr(DirectoryStore, "read", lambda self, name, limit=None: reads.append(name) or real(self, name, limit))
    clear_trust_root_cache()
    for _ in range(2):
        assert admit(s.entry(), s.policy(), NOW).via == "set"
    mine, other = stem(s), stem(s, "pkg.other")
    assert sorted(n for n in reads if n.startswith(mine)) == sorted([mine + ".dsse.json", mine + ".json",
                                                                     mine + ".overlay", mine + ".overlay"])
    assert not [n for n in reads if n.startswith(other)], reads
    with pytest.raises(OverlayRefused) as ei:
        admit(s.entry("pkg.other"), s.policy(), NOW)
    assert ei.value.reason.startswith(f"{other}.dsse.json does not match the signed overlay set 'demo' v1"), ei.value
    assert other + ".overlay" not in reads  # refused from its side file: the overlay is never read


def _envelope_json(path):
    return json.loads(path.read_bytes())


def _flip_payload(raw: bytes) -> bytes:
    env = json.loads(raw)
    payload = bytearray(base64.b64decode(env["payload"]))
    payload[payload.index(b'"version":1') + len(b'"version":')] = ord("9")  # v1 -> v9
    env["payload"] = base64.b64encode(bytes(payload)).decode()
    return json.dumps(env).encode()


def _flip_sig(raw: bytes) -> bytes:
    env = json.loads(raw)
    sig = bytearray(base64.b64decode(env["signatures"][0]["sig"]))
    sig[5] ^= 0x10
    env["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    return json.dumps(env).encode()


@pytest.mark.parametrize(
    "edit, reason",
    [
        (_flip_payload, "bad signature"),
        (_flip_sig, "bad signature"),
        (lambda raw: raw[: len(raw) // 2], "malformed envelope"),
        (lambda raw: b"{}", "malformed envelope"),
        (lambda raw: b"", "malformed envelope"),
    ],
)
def test_edited_set_refuses_the_whole_store(s, edit, reason):
    s.set_path.write_bytes(edit(s.set_path.read_bytes()))
    # Every overlay's own envelope still verifies, but there is no falling back to it.
    for module in ("demo.mod", "pkg.other"):
        got = refused(s, "^signed overlay set refused: ", module)
        assert reason in got


def test_set_deleted_while_statements_name_it(s):
    s.set_path.unlink()
    for module in ("demo.mod", "pkg.other"):
        refused(s, r"signed as part of overlay set 'demo', which this store does not have \(deleted or replaced\?\)",
                module)


def test_set_replaced_by_a_directory_or_fifo(s):
    import os

    s.set_path.unlink()
    os.mkfifo(s.set_path)
    refused(s, r"signed overlay set refused: .*is a FIFO")
    os.unlink(s.set_path)
    s.set_path.mkdir()
    refused(s, r"signed overlay set refused: .*is a directory")


def test_set_signed_by_an_untrusted_key(s):
    attacker = Ed25519PrivateKey.generate()
    sign_folder_raw(s.directory, attacker, now=NOW, ttl_seconds=DAY, envelopes=False)
    refused(s, "signed overlay set refused: untrusted key")


def test_revoked_set_signer(s):
    (s.keys_dir / "revoked.json").write_text(json.dumps({"keys": [s.keyid]}))
    for module in ("demo.mod", "pkg.other"):
        refused(s, f"signed overlay set refused: revoked key {s.keyid}", module)


def test_revoked_overlay_digest_under_a_set(s):
    digest = hashlib.sha256(s.overlay().read_bytes()).hexdigest()
    (s.keys_dir / "revoked.json").write_text(json.dumps({"overlays": [digest]}))
    refused(s, f"revoked overlay \\(sha256 {digest}")
    admitted(s, "pkg.other")


def test_set_expired(tmp_path, no_unmarshal):
    s = make_signed_set(tmp_path, now=NOW, ttl_seconds=30 * DAY)
    s.resign(expires=iso_utc(NOW + 3600))  # the set expires long before its overlays
    assert admitted(s, now=NOW + 3599).via == "set"
    for module in ("demo.mod", "pkg.other"):
        refused(s, rf"signed overlay set 'demo' expired at {iso_utc(NOW + 3600)}", module, now=NOW + 3600)


def test_overlay_expiry_under_a_set(s):
    refused(s, rf"expired at {iso_utc(NOW + DAY)}", now=NOW + DAY + 1, policy=s.policy())


def test_withdrawn_overlay_is_refused(s):
    digest = hashlib.sha256(s.overlay().read_bytes()).hexdigest()
    HostState(str(s.state_dir)).withdraw({digest: stem(s)}, NOW)
    refused(s, rf"withdrawn by codesuture rollback at {iso_utc(NOW)}")
    admitted(s, "pkg.other")
    admitted(s, policy=s.policy(state_dir=None))  # the withdrawal is this host's


def _seen(s):
    clear_trust_root_cache()
    return HostState(str(s.state_dir)).seen_version(s.keyid, "demo")


def test_a_newer_set_raises_the_high_water_mark(s):
    assert _seen(s) == 0
    admitted(s)
    assert _seen(s) == 1
    s.resign()
    admitted(s)
    assert _seen(s) == 2
    on_disk = json.loads((s.state_dir / "state.json").read_text())
    assert on_disk["sets"] == {f"{s.keyid}/demo": 2}


def test_an_older_set_than_seen_is_refused_and_the_mark_stays(s):
    v1 = s.set_path.read_bytes()
    s.resign()  # v2, same files
    admitted(s)
    assert _seen(s) == 2
    state_before = (s.state_dir / "state.json").read_bytes()
    s.set_path.write_bytes(v1)  # an attacker puts the old, validly signed set back
    for module in ("demo.mod", "pkg.other"):
        refused(s, r"signed overlay set refused: signed overlay set 'demo' version 1 is older than version 2 already "
                   r"seen on this host \(rolled back\)", module)
    assert _seen(s) == 2
    assert (s.state_dir / "state.json").read_bytes() == state_before
    # Without this host's memory the old set verifies: the refusal is the mark's alone.
    assert admitted(s, policy=s.policy(state_dir=str(s.state_dir.parent / "fresh-state"))).via == "set"


def test_marks_are_per_signer_and_set_name(s):
    admitted(s)
    HostState(str(s.state_dir)).record_version(s.keyid, "other-app", 7)
    HostState(str(s.state_dir)).record_version("0" * 64, "demo", 7)
    assert admitted(s).via == "set"  # neither mark is this set's
    assert _seen(s) == 1


def test_min_set_version(s, tmp_path):
    refused(s, r"signed overlay set refused: signed overlay set 'demo' version 1 is below min_set_version 2",
            policy=s.policy(min_set_version=2))
    s.resign()
    assert admitted(s, policy=s.policy(min_set_version=2)).via == "set"
    # A store without a set cannot meet a minimum, signed envelopes or not.
    s.set_path.unlink()
    refused(s, "signed overlay set refused: store has no signed overlay set, and min_set_version is 1",
            policy=s.policy(min_set_version=1))
    bare = make_overlay(tmp_path / "bare")
    with pytest.raises(OverlayRefused, match="store has no signed overlay set, and min_set_version is 1"):
        admit(entry_for(bare), LoadPolicy(min_set_version=1), NOW)


def test_strict_statements_verify_each_overlays_own_envelope(s):
    # The trusted signer's set pins an envelope signed by someone else: the loader's
    # policy trusts the set; strict (codesuture verify) verifies the envelope too.
    sign_overlay(s.overlay(), Ed25519PrivateKey.generate(), ttl_seconds=DAY, now=NOW, set_name="demo")
    sign_folder_raw(s.directory, s.key, now=NOW, ttl_seconds=DAY, envelopes=False)
    assert admitted(s).via == "set"
    refused(s, "untrusted key", policy=s.policy(strict_statements=True))
    assert admitted(s, "pkg.other", policy=s.policy(strict_statements=True)).via == "set"


def test_strict_statements_check_the_set_name(s):
    sign_overlay(s.overlay(), s.key, ttl_seconds=DAY, now=NOW, set_name="another-app")
    sign_folder_raw(s.directory, s.key, now=NOW, ttl_seconds=DAY, envelopes=False)
    assert admitted(s).via == "set"
    refused(s, "its own statement names overlay set 'another-app', not 'demo'", policy=s.policy(strict_statements=True))


def test_set_without_a_trust_root_when_unsigned_is_not_allowed(s):
    for policy in (LoadPolicy(require_signed=True),
                   LoadPolicy(sigstore_identity="me@example.org", sigstore_issuer="https://issuer")):
        refused(s, r"signed overlay set refused: signed overlay set cannot be verified: no trust root configured",
                policy=policy)


def test_set_is_not_verified_on_a_dev_machine_without_trust_root(s):
    # Documented: dev mode without a trust root loads from sidecars, with a warning.
    a = admitted(s, policy=LoadPolicy())
    assert a.via == "unsigned" and a.signer is None


def test_store_set_is_cached_per_process(s):
    v1 = s.set_path.read_bytes()
    s.resign()
    v2 = s.set_path.read_bytes()
    s.set_path.write_bytes(v1)
    clear_trust_root_cache()
    assert store_set(s.entry().store, s.policy()).version == 1
    s.set_path.write_bytes(v2)
    assert store_set(s.entry().store, s.policy()).version == 1  # until the cache is cleared
    clear_trust_root_cache()
    assert store_set(s.entry().store, s.policy()).version == 2


def test_full_meta_refuses_an_envelope_swapped_after_admission(s):
    a = admitted(s)
    sign_overlay(s.overlay(), s.key, ttl_seconds=2 * DAY, now=NOW, set_name="demo")  # other bytes, valid signature
    with pytest.raises(OverlayRefused, match="is not the envelope the signed overlay set pins"):
        full_meta(s.entry(), a, s.policy())


# ------------------------------------------------------- the real finder, a real signed folder

MODS = ("seta", "setb", "setc")


@pytest.fixture(scope="module")
def healed(tmp_path_factory):
    """A folder healed by ``codesuture run`` (once per module), signed by each test."""
    return healed_app(tmp_path_factory.mktemp("healed"))


@pytest.fixture
def signed(healed, tmp_path):
    from codesuture.ship.sign import SignOptions, sign_folder
    from codesuture.trust.keys import keyid

    app = tmp_path / "app"
    shutil.copytree(healed[0], app)
    ov, keys = app / "overlays", tmp_path / "keys"
    key = Ed25519PrivateKey.generate()
    keys.mkdir()
    from codesuture.trust.keys import public_pem

    (keys / "ci.pem").write_bytes(public_pem(key.public_key()))
    results = sign_folder(str(ov), key, SignOptions(state_dir=str(tmp_path / "state")))
    assert all(r.ok for r in results), results
    assert results[-1].reason == f"signed overlay set 'demoapp' v1: {len(MODS)} overlay(s)"
    clear_trust_root_cache()
    return app, ov, keys, keyid(key.public_key()), tmp_path / "state"


@pytest.fixture
def importer(signed, monkeypatch):
    """Import the app's modules in process through the finder; count DSSE verifications.
    Returns per module: the overlay's answer (None: healed) or the original's exception."""
    from codesuture.loader.finder import install, uninstall
    from codesuture.store.kinds import open_store

    app, ov, keys, _, state = signed
    calls = []
    real = dsse.verify
    monkeypatch.setattr(dsse, "verify", lambda *a, **k: calls.append(a[3] if len(a) > 3 else k.get("path")) or real(*a, **k))
    monkeypatch.syspath_prepend(str(app))

    def run():
        policy_mod.clear_trust_root_cache()
        finder = install(open_store(ov), LoadPolicy(keys, require_signed=True, state_dir=str(state)))
        assert finder is not None
        out = []
        try:
            for m in MODS:
                mod = importlib.import_module(m)
                try:
                    out.append(mod.get({} if m == "seta" else None if m == "setb" else []))
                except Exception as exc:  # noqa: BLE001 - the original code's crash
                    out.append(type(exc).__name__)
            return out
        finally:
            uninstall()
            for m in MODS:
                sys.modules.pop(m, None)
            policy_mod.clear_trust_root_cache()

    return run, calls, ov


def test_signed_folder_loads_with_one_verification(importer):
    run, calls, ov = importer
    assert run() == [None, None, None]  # every module's overlay applied
    assert calls == [str(ov / SET_NAME)]


def test_tampered_set_refuses_the_whole_store(importer, caplog):
    run, calls, ov = importer
    (ov / SET_NAME).write_bytes(_flip_sig((ov / SET_NAME).read_bytes()))
    with caplog.at_level("WARNING", logger="codesuture"):
        assert run() == ["KeyError", "AttributeError", "IndexError"]  # every original module
    refusals = [r.getMessage() for r in caplog.records if "signed overlay set refused" in r.getMessage()]
    assert len(refusals) == len(MODS) and all("bad signature" in m for m in refusals)


def test_changed_envelope_refuses_only_its_overlay(importer):
    run, calls, ov = importer
    env = next(ov.glob("seta.*.dsse.json"))
    env.write_bytes(env.read_bytes().replace(b'"sig": "', b'"sig": "A', 1))
    assert run() == ["KeyError", None, None]


def test_host_state_records_the_set_version(importer, signed):
    run, _, _ = importer
    _, _, _, kid, state = signed
    run()
    clear_trust_root_cache()
    assert HostState(str(state)).seen_version(kid, "demoapp") == 1


def test_cli_verify_reports_the_set(signed, monkeypatch):
    from codesuture.cli.group import cli as main

    _, ov, keys, kid, state = signed
    monkeypatch.setenv("CODESUTURE_STATE_DIR", str(state))
    r = CliRunner().invoke(main, ["verify", "--keys", str(keys), str(ov)])
    assert r.exit_code == 0, r.output
    assert f"OK {ov / SET_NAME} (signer {kid}" in r.output and "signed overlay set 'demoapp' v1 of 3 overlay(s)" in r.output
    assert r.output.count("OK ") == len(MODS) + 1
    (ov / SET_NAME).write_text("{}")
    clear_trust_root_cache()
    r = CliRunner().invoke(main, ["verify", "--keys", str(keys), str(ov)])
    assert r.exit_code == 1 and f"FAIL {ov / SET_NAME}: malformed envelope" in r.output
    assert r.output.count("FAIL ") == len(MODS) + 1


# ------------------------------------------------------------------------ set versions when signing


def _members(s):
    """The set members of *s*'s overlays as they are (envelopes already written)."""
    from codesuture.overlay.names import ENVELOPE_SUFFIX, META_SUFFIX, OVERLAY_SUFFIX
    from codesuture.trust.statement import meta_from_statement

    out = {}
    for overlay in sorted(s.directory.glob("*" + OVERLAY_SUFFIX)):
        st = overlay.name[: -len(OVERLAY_SUFFIX)]
        files = {st + x: (s.directory / (st + x)).read_bytes() for x in (OVERLAY_SUFFIX, META_SUFFIX, ENVELOPE_SUFFIX)}
        meta = meta_from_statement(dsse.Envelope.loads(files[st + ENVELOPE_SUFFIX]).payload, overlay.name, strict=False)[0]
        out[st] = ({"key": meta.key, "module": meta.module, "source_sha256": meta.source_sha256,
                    "cache_tag": meta.python["cache_tag"], "magic": meta.python["magic"], "expiresAt": meta.expires,
                    "tier": meta.tier}, files)
    return out


def test_a_deleted_set_never_restarts_the_count_on_a_signing_host(s, tmp_path):
    from codesuture.ship.sign import write_set

    state = tmp_path / "signer-state"
    assert write_set(str(s.directory), _members(s), s.key, "demo", now=NOW, state_dir=str(state)).reason.endswith(
        "v2: 2 overlay(s)")
    s.set_path.unlink()  # deleted on the review machine
    result = write_set(str(s.directory), _members(s), s.key, "demo", now=NOW, state_dir=str(state))
    assert "'demo' v3" in result.reason  # the host remembered v2
    assert HostState(str(state)).seen_version(s.keyid, "demo") == 3


@pytest.mark.parametrize("damage", ["garbage", "fifo"])
def test_an_unreadable_set_needs_an_explicit_version(s, damage):
    import os

    from codesuture.ship.sign import write_set

    s.set_path.unlink()
    if damage == "fifo":
        os.mkfifo(s.set_path)
    else:
        s.set_path.write_bytes(b"not an envelope")
    with pytest.raises(TrustError, match="cannot be read .*--set-version N"):
        write_set(str(s.directory), _members(s), s.key, "demo", now=NOW)
    if damage == "fifo":
        s.set_path.unlink()
        s.set_path.write_bytes(b"not an envelope")
    with pytest.raises(TrustError, match="must be above 0"):
        write_set(str(s.directory), _members(s), s.key, "demo", now=NOW, version=0)
    assert "'demo' v7" in write_set(str(s.directory), _members(s), s.key, "demo", now=NOW, version=7).reason
    with pytest.raises(TrustError, match="--set-version 7 must be above 7"):
        write_set(str(s.directory), _members(s), s.key, "demo", now=NOW, version=7)


def test_sign_refuses_a_folder_with_a_fifo_named_like_an_overlay(tmp_path):
    import os

    from codesuture.ship.sign import sign_folder

    (tmp_path / "ov").mkdir()
    os.mkfifo(tmp_path / "ov" / "m.cpython-312.0123456789abcdef.overlay")
    results = sign_folder(str(tmp_path / "ov"), Ed25519PrivateKey.generate())
    assert [r.ok for r in results] == [False, False]
    assert "is a FIFO" in results[0].reason and "nothing signed" in results[1].reason
    assert not (tmp_path / "ov" / SET_NAME).exists()
