"""Fuzz: random byte edits of a signed overlay and its envelope.

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
from trust_helpers import entry_for, forbid_unmarshal, make_signed

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


def teardown_module():
    clear_trust_root_cache()
