"""Host state (``trust/state.py``): the high-water marks of signed sets and the overlays
withdrawn on this host.

It must round-trip, never raise on a bad file (a missing, corrupt, oversized or
hostile ``state.json`` is read as empty with one log line), keep the maximum under
concurrent writers, and record withdrawals.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import stat

import pytest

from codesuture.trust import state as state_mod
from codesuture.trust.state import MAX_STATE_BYTES, STATE_FILE, HostState
from codesuture.util.clock import iso_utc
from trust_helpers import deadline

NOW = 1_800_000_000.0
KID = "ab" * 32


@pytest.fixture(autouse=True)
def _fresh_cache():
    state_mod.clear_cache()
    yield
    state_mod.clear_cache()


def fresh(directory) -> HostState:
    """The state as a new process would read it."""
    state_mod.clear_cache()
    return HostState(str(directory))


def warnings(caplog):
    return [r for r in caplog.records if r.name == "codesuture.trust" and r.levelno >= logging.WARNING]


def test_round_trip(tmp_path):
    d = tmp_path / "state"
    st = HostState(str(d))
    assert repr(st) == f"HostState({str(d / STATE_FILE)!r})"
    assert st.seen_version(KID, "app") == 0 and st.withdrawn() == {}
    assert not d.exists()  # reading creates nothing
    st.record_version(KID, "app", 3)
    st.record_version(KID, "other", 9)
    assert st.seen_version(KID, "app") == 3  # this object sees its own write at once
    st.withdraw({"cd" * 32: "demo.mod.cpython-312.0123456789abcdef"}, NOW)
    again = fresh(d)
    assert again.seen_version(KID, "app") == 3 and again.seen_version(KID, "other") == 9
    assert again.seen_version("ef" * 32, "app") == 0
    assert again.withdrawn() == {"cd" * 32: {"at": iso_utc(NOW), "what": "demo.mod.cpython-312.0123456789abcdef"}}
    on_disk = json.loads((d / STATE_FILE).read_text())
    assert on_disk == {"format": 1, "sets": {f"{KID}/app": 3, f"{KID}/other": 9},
                       "withdrawn": {"cd" * 32: {"at": iso_utc(NOW), "what": "demo.mod.cpython-312.0123456789abcdef"}},
                       "rolled_back": {}}  # fingerprints codesuture rollback took out (none here)
    assert stat.S_IMODE((d / STATE_FILE).stat().st_mode) == 0o600
    assert not [n for n in os.listdir(d) if n.endswith(".tmp")]


def test_marks_only_go_up(tmp_path):
    st = HostState(str(tmp_path))
    st.record_version(KID, "app", 5)
    before = (tmp_path / STATE_FILE).stat().st_mtime_ns, (tmp_path / STATE_FILE).read_bytes()
    st.record_version(KID, "app", 4)
    st.record_version(KID, "app", 5)
    assert ((tmp_path / STATE_FILE).stat().st_mtime_ns, (tmp_path / STATE_FILE).read_bytes()) == before  # not rewritten
    assert fresh(tmp_path).seen_version(KID, "app") == 5
    fresh(tmp_path).record_version(KID, "app", 6)
    assert fresh(tmp_path).seen_version(KID, "app") == 6


def test_withdraw_adds_and_keeps(tmp_path):
    st = HostState(str(tmp_path))
    st.withdraw({}, NOW)
    assert not (tmp_path / STATE_FILE).exists()  # nothing to record, nothing written
    st.withdraw({"01" * 32: "a"}, NOW)
    st.record_version(KID, "app", 2)
    fresh(tmp_path).withdraw({"02" * 32: "b", "03" * 32: "c"}, NOW + 60)
    got = fresh(tmp_path)
    assert set(got.withdrawn()) == {"01" * 32, "02" * 32, "03" * 32}
    assert got.withdrawn()["02" * 32] == {"at": iso_utc(NOW + 60), "what": "b"}
    assert got.seen_version(KID, "app") == 2


def test_read_once_per_process(tmp_path):
    st = HostState(str(tmp_path))
    st.record_version(KID, "app", 1)
    other = {"format": 1, "sets": {f"{KID}/app": 7}, "withdrawn": {}}
    (tmp_path / STATE_FILE).write_text(json.dumps(other))  # another process wrote it
    assert HostState(str(tmp_path)).seen_version(KID, "app") == 1  # cached
    st.record_version(KID, "app", 2)  # a write re-reads under the lock: 7 stays
    assert st.seen_version(KID, "app") == 7
    assert fresh(tmp_path).seen_version(KID, "app") == 7


@pytest.mark.parametrize(
    "content, why",
    [
        (b"not json", "Expecting value"),
        (b"", "Expecting value"),
        (b"\xff\xfe\x00garbage", ""),
        (b"[]", "not a CodeSuture state file"),
        (b'{"format": 2, "sets": {}}', "not a CodeSuture state file"),
        (b'{"format": 1, "sets": {"x/y": "7"}}', "'sets' must map names to versions"),
        (b'{"format": 1, "sets": []}', "'sets' must map names to versions"),
        (b'{"format": 1, "withdrawn": []}', "'withdrawn' must be an object"),
    ],
)
def test_corrupt_state_is_read_as_empty_with_one_log_line(tmp_path, caplog, content, why):
    (tmp_path / STATE_FILE).write_bytes(content)
    with caplog.at_level(logging.INFO, logger="codesuture.trust"):
        st = fresh(tmp_path)
        assert st.seen_version(KID, "app") == 0 and st.withdrawn() == {}
        assert st.seen_version(KID, "other") == 0  # read once: still one line
    lines = warnings(caplog)
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert lines[0].getMessage().startswith(f"host state {tmp_path / STATE_FILE} ignored: ") and why in lines[0].getMessage()


def test_a_write_replaces_a_corrupt_state(tmp_path):
    (tmp_path / STATE_FILE).write_text("{corrupt")
    fresh(tmp_path).record_version(KID, "app", 4)
    data = json.loads((tmp_path / STATE_FILE).read_text())
    assert data["sets"] == {f"{KID}/app": 4}


def test_missing_state_is_empty_and_silent(tmp_path, caplog):
    with caplog.at_level(logging.DEBUG, logger="codesuture.trust"):
        st = fresh(tmp_path / "never" / "made")
        assert st.seen_version(KID, "app") == 0 and st.withdrawn() == {}
    assert warnings(caplog) == []


def test_oversized_state_is_refused_before_reading(tmp_path, caplog, monkeypatch):
    with open(tmp_path / STATE_FILE, "wb") as fh:  # sparse: costs no disk
        fh.truncate(MAX_STATE_BYTES + 1)
    reads = []
    real = os.read
    monkeypatch.setattr(os, "read", lambda fd, n: reads.append(n) or real(fd, n))
    with caplog.at_level(logging.INFO, logger="codesuture.trust"):
        assert fresh(tmp_path).seen_version(KID, "app") == 0
    (line,) = warnings(caplog)
    # The size check's own words (it names the size), and not one byte was read.
    assert f"oversized ({MAX_STATE_BYTES + 1} bytes > {MAX_STATE_BYTES})" in line.getMessage()
    assert reads == []


def test_fifo_state_does_not_block(tmp_path, caplog):
    os.mkfifo(tmp_path / STATE_FILE)
    with caplog.at_level(logging.INFO, logger="codesuture.trust"), deadline(5):
        assert fresh(tmp_path).seen_version(KID, "app") == 0
        fresh(tmp_path).record_version(KID, "app", 3)  # replaced atomically by a regular file
    assert "is a FIFO" in warnings(caplog)[0].getMessage()
    assert stat.S_ISREG(os.lstat(tmp_path / STATE_FILE).st_mode)
    assert fresh(tmp_path).seen_version(KID, "app") == 3


@pytest.mark.parametrize("kind", ["directory", "symlink to /dev/zero", "symlink to a FIFO"])
def test_hostile_state_files(tmp_path, caplog, kind):
    target = tmp_path / STATE_FILE
    if kind == "directory":
        target.mkdir()
        expected = "is a directory"
    elif kind == "symlink to /dev/zero":
        target.symlink_to("/dev/zero")
        expected = "is a symlink to a device"
    else:
        os.mkfifo(tmp_path / "fifo")
        target.symlink_to(tmp_path / "fifo")
        expected = "is a symlink to a FIFO"
    with caplog.at_level(logging.INFO, logger="codesuture.trust"), deadline(5):
        st = fresh(tmp_path)
        assert st.seen_version(KID, "app") == 0 and st.withdrawn() == {}
    (line,) = warnings(caplog)
    assert expected in line.getMessage()


def test_unwritable_state_never_raises_on_record(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    st = HostState(str(blocker / "state"))
    with caplog.at_level(logging.INFO, logger="codesuture.trust"):
        st.record_version(KID, "app", 3)  # the load goes on
    assert any("not updated" in r.getMessage() for r in caplog.records)
    with pytest.raises(OSError):
        st.withdraw({"01" * 32: "x"}, NOW)  # rollback must report it


# ------------------------------------------------------------------ concurrent writers

WORKERS = 6
ROUNDS = 15


def _writer(directory: str, n: int) -> None:
    state_mod.clear_cache()
    st = HostState(directory)
    for i in range(ROUNDS):
        # Interleaved, out of order: a shared mark and one of this process's own.
        st.record_version(KID, "shared", (i * 7 + n * 3) % (ROUNDS * WORKERS) + 1)
        st.record_version(KID, f"own-{n}", n * 100 + i)
    st.withdraw({f"{n:064x}": f"w{n}"}, NOW)


def test_concurrent_record_version_keeps_the_maximum(tmp_path):
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), n)) for n in range(WORKERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * WORKERS
    expected_shared = max((i * 7 + n * 3) % (ROUNDS * WORKERS) + 1 for i in range(ROUNDS) for n in range(WORKERS))
    st = fresh(tmp_path)
    assert st.seen_version(KID, "shared") == expected_shared
    for n in range(WORKERS):  # no lost update: every process's own mark and withdrawal
        assert st.seen_version(KID, f"own-{n}") == n * 100 + ROUNDS - 1
    assert set(st.withdrawn()) == {f"{n:064x}" for n in range(WORKERS)}
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    json.loads((tmp_path / STATE_FILE).read_text())  # never torn
