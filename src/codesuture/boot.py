"""``python -m codesuture.boot [options] (script.py | -m module) [args...]``

Installs the overlay finder (and, unless ``--no-heal``, the healer), then runs the
target as ``__main__`` like ``python script.py`` / ``python -m module`` would.

Options (each has an environment variable, set for subprocesses too):

  --overlays PATH     overlay directory or bundle file    CODESUTURE_OVERLAYS (default: ./overlays)
  --keys DIR          trust root: public keys, revoked.json CODESUTURE_KEYS
  --require-signed    refuse unsigned overlays              CODESUTURE_REQUIRE_SIGNED=1
  --heal / --no-heal  heal crashes live and write overlays  CODESUTURE_HEAL=0|1 (default: heal)
  --retries N         replays after patches (default 3)     CODESUTURE_RETRIES
  --dry-run           diagnose only, change nothing
  -v, --verbose       log what CodeSuture does
  CODESUTURE_DISABLE=1 turns everything off: the target runs as with plain python.

Kept import-light: nothing heavy is imported before a crash or an overlay needs it.
"""

from __future__ import annotations

import os
import sys

USAGE = (
    "usage: python -m codesuture.boot [--overlays PATH] [--keys DIR] [--require-signed] "
    "[--heal | --no-heal] [--retries N] [--dry-run] [-v] (script.py | -m module) [args...]"
)
_TRUE = {"1", "true", "yes", "on"}


class UsageError(Exception):
    pass


def parse(argv: list[str], environ: dict[str, str] | os._Environ[str]) -> dict:
    """Parse boot options; returns a dict of settings. Raises UsageError."""
    opts: dict = {
        "overlays": environ.get("CODESUTURE_OVERLAYS") or "overlays",
        "keys": environ.get("CODESUTURE_KEYS") or None,
        "require_signed": environ.get("CODESUTURE_REQUIRE_SIGNED", "").lower() in _TRUE,
        "heal": environ.get("CODESUTURE_HEAL", "1").lower() in _TRUE,
        "retries": environ.get("CODESUTURE_RETRIES", "3"),
        "dry_run": False,
        "verbose": 0,
        "module": None,
        "script": None,
        "args": [],
    }
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("--overlays", "--keys", "--retries", "-m"):
            if i + 1 >= len(argv):
                raise UsageError(f"{a} needs a value")
            value = argv[i + 1]
            if a == "-m":
                opts["module"], opts["args"] = value, argv[i + 2 :]
                break
            opts[a[2:].replace("-", "_")] = value
            i += 2
            continue
        if a.startswith("--overlays=") or a.startswith("--keys=") or a.startswith("--retries="):
            name, _, value = a[2:].partition("=")
            opts[name] = value
        elif a == "--require-signed":
            opts["require_signed"] = True
        elif a == "--heal":
            opts["heal"] = True
        elif a == "--no-heal":
            opts["heal"] = False
        elif a == "--dry-run":
            opts["dry_run"] = True
        elif a in ("-v", "--verbose"):
            opts["verbose"] += 1
        elif a in ("-h", "--help"):
            raise UsageError("")
        elif a.startswith("-"):
            raise UsageError(f"unknown option {a}")
        else:
            opts["script"], opts["args"] = a, argv[i + 1 :]
            break
        i += 1
    if opts["script"] is None and opts["module"] is None:
        raise UsageError("nothing to run: give a script or -m module")
    try:
        opts["retries"] = int(opts["retries"])
        if opts["retries"] < 0:
            raise ValueError
    except ValueError:
        raise UsageError(f"--retries takes a whole number >= 0, not {opts['retries']!r}") from None
    return opts


def export(opts: dict) -> None:
    """Publish the settings so subprocesses and workers inherit them."""
    os.environ["CODESUTURE_OVERLAYS"] = os.path.abspath(opts["overlays"])
    if opts["keys"]:
        os.environ["CODESUTURE_KEYS"] = os.path.abspath(opts["keys"])
    if opts["require_signed"]:
        os.environ["CODESUTURE_REQUIRE_SIGNED"] = "1"
    os.environ["CODESUTURE_HEAL"] = "1" if opts["heal"] else "0"


def _target(opts: dict) -> "object":
    """The script or ``-m`` module to run; prints Python's message and returns None
    when a module cannot be found."""
    from codesuture.runtime import script

    try:
        if opts["module"]:
            return script.module_target(opts["module"], opts["args"])
        return script.script_target(opts["script"], opts["args"])
    except ImportError as exc:
        print(f"{sys.executable}: {exc}", file=sys.stderr)
        return None


def _plain(opts: dict) -> int:
    """Run the target with nothing of CodeSuture active (the kill switch): no finder,
    no healer, no environment exported; the same runner as ``python script.py``."""
    from codesuture.runtime import script

    target = _target(opts)
    return 1 if target is None else script.run(target)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the target's exit code (2 on a usage error)."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        opts = parse(argv, os.environ)
    except UsageError as exc:
        if not str(exc):  # --help
            print(__doc__.strip().replace("``", "`"))
            return 0
        print(f"codesuture.boot: {exc}", file=sys.stderr)
        print(USAGE, file=sys.stderr)
        return 2
    if os.environ.get("CODESUTURE_DISABLE", "").lower() in _TRUE:
        return _plain(opts)
    from codesuture import logs

    logs.request(30 if not opts["verbose"] else 20 if opts["verbose"] == 1 else 10)  # logging levels
    export(opts)
    return start(opts)


def start(opts: dict) -> int:
    from codesuture.loader.finder import install
    from codesuture.runtime import script

    finder = install(opts["overlays"])  # the policy is read from the environment on first use
    entries = finder.index if finder is not None else None
    target = _target(opts)
    if target is None:
        return 1
    if not os.path.isfile(target.path):
        print(f"{sys.executable}: can't open file {target.path!r}: [Errno 2] No such file or directory", file=sys.stderr)
        return 2
    heal = _lazy_healer(opts) if opts["heal"] else None
    return script.run(target, heal=heal, retries=opts["retries"], entries=entries, policy=None)


def _lazy_healer(opts: dict) -> "object":
    """A heal callback that imports the healer (and bytecode) only on the first crash."""
    made: list = []

    def heal(exc: BaseException, main_code: object, main_path: str) -> object:
        if not made:
            try:
                from pathlib import Path

                from codesuture.runtime.healer import Healer

                made.append(Healer(overlays=None if opts["dry_run"] else Path(opts["overlays"]), dry_run=opts["dry_run"]))
            except Exception as err:  # contained (rule 7): run the original code
                from codesuture.logs import logger

                logger("codesuture.heal").warning("healer unavailable: %r", err)
                return None
        return made[0].heal(exc, main_code, main_path)  # type: ignore[attr-defined]

    return heal


if __name__ == "__main__":
    sys.exit(main())
