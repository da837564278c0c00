"""A run's replay in a fresh process: never the script's module code twice in one.

Replaying a script in the process that crashed re-ran its module-level code beside
the state the first attempt left: a metric registered at module level (a
``prometheus_client`` registry lives in an imported module) raised ``Duplicated
timeseries``, module-level caches kept the first attempt's entries. A replay is
therefore the same command line started again with :func:`os.execv` (same process
id, same standard streams, the current folder the run started in), which loads the
patch just written from the overlay store at import. What the replay needs from the
attempt before it travels in a small JSON file named by ``CODESUTURE_REPLAY_STATE``
(read and removed at once by :func:`resume`):

* the replay count and the progress rule's state (:mod:`codesuture.runtime.replay`);
* what the attempt wrote to ``sys.stdout``/``sys.stderr`` before its crash
  (:func:`record_output`; at most :data:`MAX_OUTPUT` characters per stream), which
  the replay does not write again: while its output repeats that text, it is dropped;
  from the first difference on, everything is written;
* the lines the command prints at its end about the patches made (``codesuture
  run``), and their counts, so the last process reports them all;
* the newest heal (``last_heal``), so the replay can count a further guard as part of
  it (a cascade) or take it back when the replay fails at once on its default
  (:mod:`codesuture.runtime.takeback`).

Output written around ``sys.stdout``/``sys.stderr`` (to their ``buffer`` or file
descriptor, by a subprocess) is not recorded, and can appear twice.

No ``from __future__`` import: it is a module of its own to load, and this module is on
the start-up path of a dev run that may replay.
"""

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, NoReturn

STATE_ENV = "CODESUTURE_REPLAY_STATE"
#: Most characters of one stream's output kept for the replay to skip (1 MiB).
MAX_OUTPUT = 1 << 20

#: From the attempts before this process: ``{"patched": n, "proposed": n, "lines": [...]}``.
CARRIED: "dict[str, Any]" = {"patched": 0, "proposed": 0, "lines": []}


class _Recorder:
    """A text stream that keeps what is written through it (up to :data:`MAX_OUTPUT`
    characters) until :func:`recorded`; everything else is the real stream's."""

    def __init__(self, stream: "Any") -> None:
        self.__dict__.update(_stream=stream, _kept=[], _size=0, _on=True, _over=False)

    def write(self, text: str) -> int:
        n: int = self._stream.write(text)
        if self._on and isinstance(text, str):
            if self._size + len(text) > MAX_OUTPUT:
                self.__dict__["_over"] = True
            else:
                self._kept.append(text)
                self.__dict__["_size"] = self._size + len(text)
        return n

    def writelines(self, lines: "Any") -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> "Any":
        return getattr(self.__dict__["_stream"], name)

    def __setattr__(self, name: str, value: "Any") -> None:
        setattr(self.__dict__["_stream"], name, value)


class _Skipper:
    """A text stream that drops what repeats *expected* from its start; after the first
    difference (or the end of *expected*) it writes everything."""

    def __init__(self, stream: "Any", expected: str) -> None:
        self.__dict__.update(_stream=stream, _expected=expected, _at=0)

    def write(self, text: str) -> int:
        at, expected = self._at, self._expected
        if at < len(expected) and isinstance(text, str):
            n = 0
            while n < len(text) and at + n < len(expected) and text[n] == expected[at + n]:
                n += 1
            if n == len(text):
                self.__dict__["_at"] = at + n
                return len(text)
            self.__dict__["_at"] = len(expected)  # a difference: from here on, all of it
            self._stream.write(text[n:])
            return len(text)
        written: int = self._stream.write(text)
        return written

    def writelines(self, lines: "Any") -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> "Any":
        return getattr(self.__dict__["_stream"], name)

    def __setattr__(self, name: str, value: "Any") -> None:
        setattr(self.__dict__["_stream"], name, value)


def record_output() -> None:
    """Keep what the program writes to ``sys.stdout``/``sys.stderr`` from now on."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, _Recorder):
            setattr(sys, name, _Recorder(stream))


def recorded() -> "tuple[dict[str, str], bool]":
    """Stop keeping output; ``({"stdout": text, "stderr": text}, whether a stream
    wrote more than MAX_OUTPUT)``. The recorders keep passing output on."""
    out: "dict[str, str]" = {}
    over = False
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if isinstance(stream, _Recorder):
            stream.__dict__["_on"] = False
            out[name] = "".join(stream.__dict__["_kept"])
            over = over or bool(stream.__dict__["_over"])
    return out, over


def resume() -> "dict[str, Any] | None":
    """In a replay: the state the attempt before left (the file is removed, the variable
    unset, so the program's own subprocesses never see it), with output skipping on
    for ``sys.stdout``/``sys.stderr``; None in a first run. Never raises."""
    path = os.environ.pop(STATE_ENV, None)
    if not path:
        return None
    import json

    try:
        with open(path, "rb") as fh:
            state = json.loads(fh.read(8 * MAX_OUTPUT))
        os.unlink(path)
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict):
        return None
    output = state.get("output") or {}
    for name in ("stdout", "stderr"):
        stream, expected = getattr(sys, name), output.get(name)
        if stream is not None and isinstance(expected, str) and expected:
            setattr(sys, name, _Skipper(stream, expected))
    CARRIED.update(patched=int(state.get("patched", 0)), proposed=int(state.get("proposed", 0)),
                   lines=[str(x) for x in state.get("lines", [])])
    if "guards" in state:
        CARRIED["guards"] = int(state["guards"])
    if isinstance(state.get("last_heal"), dict):
        CARRIED["last_heal"] = state["last_heal"]  # the healer continues or takes it back
    return state


def replay(state: "dict[str, Any]", cwd: str) -> "NoReturn":
    """Start this command line again in this process (:func:`os.execv`) from *cwd*,
    handing *state* on. Raises OSError when the state cannot be written or the
    interpreter cannot be started (the caller reports the crash instead)."""
    import json
    import tempfile

    fd, path = tempfile.mkstemp(prefix="codesuture-replay-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(state, fh)
        for stream in (sys.stdout, sys.stderr):
            try:
                if stream is not None:
                    stream.flush()
            except (OSError, ValueError):
                pass
        os.chdir(cwd)
        from codesuture.settings import EXPORTED_OVER

        env = dict(os.environ)
        for name, before in EXPORTED_OVER.items():  # the environment the user started it in
            if before is None:
                env.pop(name, None)
            else:
                env[name] = before
        env[STATE_ENV] = path
        os.execve(sys.executable, list(sys.orig_argv), env)
    except BaseException:
        try:
            os.unlink(path)
        except OSError:
            pass
        raise
    raise OSError("execve returned")  # pragma: no cover - execve never returns


__all__ = ["STATE_ENV", "MAX_OUTPUT", "CARRIED", "record_output", "recorded", "resume", "replay"]
