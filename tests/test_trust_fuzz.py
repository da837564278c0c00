"""Fuzz: random byte edits of a signed overlay and its envelope, and of every file of
a signed folder (overlay, sidecar, envelope, the signed set).

admit() must either refuse with OverlayRefused or, when the edits did not change what
is signed (e.g. JSON whitespace or the unauthenticated keyid hint), admit exactly the
original overlay bytes and metadata. Never any other exception; never marshal.loads.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codesuture.errors import OverlayRefused
from codesuture.trust.policy import admit, clear_trust_root_cache
from codesuture.overlay.names import SET_NAME
from trust_helpers import entry_for, forbid_unmarshal, make_signed, make_signed_set

NOW = 1_800_000_000.0


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    s = make_signed(tmp_path_factory.mktemp("fuzzbase"), ttl_seconds=86400, now=NOW)
    original = admit(s.entry, s.policy, NOW)  # warm up lazy imports too
    return s, original


edit = st.tuples(
    st.sampled_from(["flip", "insert", "delete", "truncate", "set"]),
    st.floats(min_value=0, max_value=1, allow_nan=False),
    st.integers(min_value=0, max_value=255),
)


def apply(data: bytes, edits) -> bytes:
    buf = bytearray(data)
    for op, where, byte in edits:
        i = min(int(where * len(buf)), max(len(buf) - 1, 0))
        if op == "flip" and buf:
            buf[i] ^= (byte or 1)
        elif op == "set" and buf:
            buf[i] = byte
        elif op == "insert":
            buf.insert(i, byte)
        elif op == "delete" and buf:
            del buf[i]
        elif op == "truncate":
            del buf[i:]
    return bytes(buf)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    overlay_edits=st.lists(edit, max_size=3),
    envelope_edits=st.lists(edit, max_size=3),
)
def test_random_edits_never_escape(base, monkeypatch, overlay_edits, envelope_edits):
    s, original = base
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        overlay = d / s.overlay.name
        shutil.copy(s.overlay.with_suffix(".json"), d)
        overlay.write_bytes(apply(s.overlay.read_bytes(), overlay_edits))
        (d / s.envelope.name).write_bytes(apply(s.envelope.read_bytes(), envelope_edits))

        with monkeypatch.context() as m:
            calls = forbid_unmarshal(m)
            try:
                admitted = admit(entry_for(overlay), s.policy, NOW)
            except OverlayRefused as exc:
                assert exc.reason
                return
            finally:
                assert calls == []
        assert admitted.overlay_bytes == original.overlay_bytes
        assert admitted.meta == original.meta
        assert admitted.signer == original.signer


@pytest.fixture(scope="module")
def set_base(tmp_path_factory):
    s = make_signed_set(tmp_path_factory.mktemp("fuzzset"), now=NOW, ttl_seconds=86400)
    original = admit(s.entry(), s.policy(state_dir=None), NOW)
    return s, original


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    target=st.sampled_from([".overlay", ".json", ".dsse.json", SET_NAME]),
    edits=st.lists(edit, min_size=1, max_size=3),
)
def test_random_edits_of_a_signed_folder_never_escape(set_base, monkeypatch, target, edits):
    s, original = set_base
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "overlays"
        shutil.copytree(s.directory, d)
        victim = d / (SET_NAME if target == SET_NAME else s.entry().name + target)
        before = victim.read_bytes()
        victim.write_bytes(apply(before, edits))
        changed = victim.read_bytes() != before
        clear_trust_root_cache()
        with monkeypatch.context() as m:
            calls = forbid_unmarshal(m)
            try:
                admitted = admit(entry_for(d / s.overlay().name), s.policy(state_dir=None), NOW)
            except OverlayRefused as exc:
                assert exc.reason
                return
            finally:
                assert calls == []
        # Only the set's JSON framing may change without a refusal: every pinned file
        # is compared byte for byte.
        assert target == SET_NAME or not changed
        assert admitted.overlay_bytes == original.overlay_bytes
        assert admitted.meta == original.meta
        assert admitted.signer == original.signer and admitted.via == "set"


def teardown_module():
    clear_trust_root_cache()
