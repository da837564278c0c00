"""``codesuture run`` and ``codesuture watch``, parsed with the standard library only.

These two commands run inside the app's own environment, which may pin any release of
``click`` (or none): they must not import it. Their command line is boot's
(:func:`codesuture.boot.parse`), so ``run`` takes exactly the options ``python -m
codesuture.boot`` takes; ``watch`` adds two of its own. The review commands are the
click group (:mod:`codesuture.cli.group`).
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

RUN_DOC = """Run the target like `python script.py args...` / `python -m module args...`,
healing structural crashes live, writing overlays (to overlays/ beside the script
unless --overlays or the app's config names a store; never the current directory's
for a script: the directory Python puts first on sys.path, the current one only for
-m and -c, none for a zip app) and replaying the run while each heal makes progress,
at most --retries times. A replay starts the run again in a fresh process, which
loads the new overlay; output already written is not written again. --replay auto
(the default) replays only a run that had no side effect before its crash (no file
written, removed, renamed or created, no socket connect/send, subprocess or sqlite3
database); otherwise the run ends as the program's crash would, with one line:
"healed for the next run; not replayed: ...". --replay always|never overrides it. A
trust root, --require-signed or a bundle makes the run prod (load verified overlays
only; --heal proposes patches for review). Takes every option of `python -m
codesuture.boot`."""

WATCH_USAGE = "usage: codesuture watch [--overlays DIR] [--max-restarts N] [--] (script.py | -m module) [args...]"

WATCH_DOC = WATCH_USAGE + """

Run the program under boot (python -m codesuture.boot --retries 0), and start it
again from the beginning after each run that crashed and wrote a patch, so it runs
with every overlay loaded at import. Stops at exit 0, when a run patched nothing,
after --max-restarts restarts, or when the run had side effects before its crash (a
file written, a connection...: starting it again would repeat them; `replay = never`
in the settings also stops it). Every other setting comes from the CODESUTURE_*
variables and the app's [tool.codesuture] table, as boot reads them (see `codesuture
run --help`).

Options:
  --overlays DIR
      the overlay store folder the runs heal into; default: overlays/ beside the
      script (the current directory's only for -m)
  --max-restarts N
      most restarts; default: 3
  -V, --version
      print CodeSuture's and Python's versions and exit
  -h, --help
      print this help and exit
  --
      end of watch's options: the next argument is the script

Exit codes:
  N    the last run's exit code (0 when it ended normally, 1 after an unhandled
       exception, as python)
  2    usage error (a bad option), or the script cannot be opened
  130  interrupted (Ctrl-C)"""


def _patch_lines(session: Any, default_store: str | None) -> list[str]:
    """What ``run`` says after the program ends: at -v each patch's instruction diff (the
    attempts before a replay included), then the session summary. (Each patch, and each
    patch a dry run would have made, is already one log line of the healer's.)"""
    from codesuture.runtime.rerun import CARRIED
    from codesuture.runtime.session import summary

    lines: list[str] = [*CARRIED["lines"], *_made(session)]
    line = summary(session, default_store)
    if line:
        lines.append(line)
    return lines


def _made(session: Any) -> list[str]:
    """At -v, the instruction diff of each patch this process made (a replay hands them on)."""
    lines: list[str] = []
    healer = getattr(session, "healer", None)
    if getattr(session, "verbose", 0) > 0:
        lines += [result.diff for result in getattr(healer, "history", []) if result.status == "patched"]
    return lines


def run(argv: list[str], verbose: int = 0) -> int:
    """``codesuture run ARGV...``; returns the exit code."""
    from codesuture import boot

    prepared = boot.prepare((["-q"] if verbose < 0 else ["-v"] * verbose) + argv, command="run", prog="codesuture run", doc=RUN_DOC)
    if isinstance(prepared, int):
        return prepared
    s, target = prepared
    if s is None:  # the kill switch: the program runs as plain python would
        from codesuture.runtime import script

        return script.run(target)
    code, session = boot.start(s, target, carry=_made)
    session.verbose = s.verbose
    for line in _patch_lines(session, s.overlays if "overlays" not in s.sources else None) if s.verbose >= 0 else ():
        print(line, file=sys.stderr)
    return code


def watch(argv: list[str], verbose: int = 0) -> int:
    """``codesuture watch ARGV...``; returns the exit code."""
    from codesuture.settings import EXIT_USAGE

    overlays: str | None = None
    max_restarts, i = 3, 0
    try:
        while i < len(argv) and argv[i].startswith("-") and argv[i] != "-m":
            name, eq, value = argv[i].partition("=")
            if name == "--":
                i += 1
                break
            if name in ("-h", "--help"):
                print(WATCH_DOC)
                return 0
            if name in ("-V", "--version"):
                from codesuture.boot import version

                print(version())
                return 0
            if name not in ("--overlays", "--max-restarts"):
                raise ValueError(f"unknown option {name}")
            if not eq:
                if i + 1 >= len(argv):
                    raise ValueError(f"{name} needs a value")
                i += 1
                value = argv[i]
            if name == "--overlays":
                overlays = value
            else:
                try:
                    max_restarts = int(value)
                except ValueError:
                    raise ValueError(f"--max-restarts: {value!r} is not a whole number") from None
                if max_restarts < 0:
                    raise ValueError(f"--max-restarts: {value!r} is negative")
            i += 1
        program = argv[i:]
        if program and program[0] != "-m":
            program = ["--", *program]  # a script name that starts with - stays the script
        if not program or program in (["-m"], ["--"]):
            raise ValueError("give PROGRAM: script.py [ARGS]... or -m MODULE [ARGS]...")
        if overlays is None:
            from codesuture.boot import UsageError, parse

            try:
                where = parse(program).store_dir()
            except UsageError as exc:
                raise ValueError(str(exc)) from None
            if where is None:
                raise ValueError("no default store for this program (a zip app, or -m under -P): give --overlays")
            overlays = os.path.join(where, "overlays")
    except ValueError as exc:
        print(f"codesuture watch: {exc}", file=sys.stderr)
        print(WATCH_USAGE, file=sys.stderr)
        print("Try 'codesuture watch --help' for every option.", file=sys.stderr)
        return EXIT_USAGE
    if os.path.exists(overlays) and not os.path.isdir(overlays):
        print(f"codesuture watch: --overlays {overlays!r} is not a folder", file=sys.stderr)
        return EXIT_USAGE
    from codesuture.runtime.watch import watch as run_watch

    def told(n: int, rc: int) -> None:
        print(f"codesuture: watch: run ended with exit code {rc} after a patch: restart {n} of {max_restarts}",
              file=sys.stderr)

    def stopped(why: str) -> None:
        print(f"codesuture: watch: healed for the next run; not restarted: {why}", file=sys.stderr)

    rc, restarts = run_watch(os.path.abspath(overlays), program, max_restarts=max_restarts, on_restart=told,
                             on_stop=stopped)
    print(f"codesuture: watch: {restarts} restart(s), exit code {rc}", file=sys.stderr)
    return rc


def doctor(argv: list[str], verbose: int = 0) -> int:
    """``codesuture doctor ARGV...`` (:mod:`codesuture.cli.doctor`); returns the exit code."""
    from codesuture.cli.doctor import doctor as run_doctor

    return run_doctor(argv, verbose)


#: Commands this module runs (standard library only), by name: (argv, verbose) -> exit code.
COMMANDS = {"run": run, "watch": watch, "doctor": doctor}

__all__ = ["run", "watch", "COMMANDS", "RUN_DOC", "WATCH_DOC", "WATCH_USAGE"]
