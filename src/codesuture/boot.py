"""``python -m codesuture.boot [options] (script.py | app-folder | app.zip | -m module | -c code) [args...]``

Installs the overlay finder for the configured store (and, in dev mode, the healer),
then runs the target as ``__main__`` like ``python script.py`` / ``python -m module``
would. Settings come from flags, ``CODESUTURE_*`` variables and the app's config file
(see :mod:`codesuture.settings`; ``--help`` lists them all). Without a store setting,
no store is read: boot never reads ``./overlays`` on its own.

Modes: dev (heal live, write overlays) unless a trust root, ``--require-signed`` or a
bundle makes it prod (load verified overlays only; a crash is logged as one line with
what would have been patched; ``--heal`` heals live and proposes the patch in the
pending directory). ``CODESUTURE_DISABLE=1`` turns everything off: the target runs as
with plain python.

Exit codes: the target's; 2 for a usage or configuration error; 78 when
``--require-overlays`` is set and the store or trust root cannot be used; 130 after
Ctrl-C.

Kept import-light: nothing heavy is imported before a crash or an overlay needs it,
and no ``from __future__`` import (it is a module of its own to load): a start with
no store imports :mod:`codesuture.settings`, :mod:`codesuture.logs` and
:mod:`codesuture.runtime.session` / ``.script`` (see ``benchmarks/callgrind_startup.py``).
"""

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

    from codesuture.settings import Settings

USAGE = (
    "usage: python -m codesuture.boot [options] [--] (script.py | app-folder | app.zip | -m module | -c code) [args...]"
)
#: Command-line options that are not settings, besides -v/-q/-V/-h/--: flag -> (attribute, value).
_EXTRA_FLAGS = {"--dry-run": ("dry_run", True)}


def _options() -> "tuple[dict[str, str], dict[str, tuple[str, bool]]]":
    """(option taking a value -> settings attribute, flag -> (attribute, value)), from
    :data:`codesuture.settings.FIELDS`: every boolean setting with a flag ``--x`` also
    takes ``--no-x``."""
    from codesuture.settings import FIELDS

    valued = {f.flag: f.name for f in FIELDS if f.flag and f.kind != "bool"}
    flags = dict(_EXTRA_FLAGS)
    for f in FIELDS:
        if f.flag and f.kind == "bool":
            flags[f.flag] = (f.name, True)
            flags["--no-" + f.flag[2:]] = (f.name, False)
    return valued, flags


class UsageError(Exception):
    """A bad command line; an empty message asks for ``--help``, ``"--version"`` for the version."""


class Invocation:
    """The parsed command line: settings given as flags, and the target."""

    __slots__ = ("flags", "module", "script", "code", "args")

    def __init__(self) -> None:
        self.flags: dict[str, Any] = {"verbose": 0}
        self.module: str | None = None
        self.script: str | None = None
        self.code: str | None = None
        self.args: list[str] = []

    def start_dir(self) -> str:
        """Where the app root search starts: the script's directory, an app folder
        itself, the current directory for -m and -c."""
        if not self.script:
            return os.getcwd()
        full = os.path.abspath(self.script)
        return full if os.path.isdir(full) else os.path.dirname(full)

    def store_dir(self) -> str | None:
        """Where ``codesuture run`` keeps its default store (``<here>/overlays``): the
        directory Python puts first on ``sys.path`` for this launch form, the one place
        plain python already trusts to import from. A script: its own directory (never
        the current one); an app folder: the folder; ``-m`` and ``-c``: the current
        directory, as Python imports from it there, unless ``-P``/``PYTHONSAFEPATH``;
        a zip app: None (no default store)."""
        if not self.script:
            return None if sys.flags.safe_path else os.getcwd()
        full = os.path.abspath(self.script)
        if os.path.isdir(full):
            return full
        if os.path.isfile(full):
            from codesuture.runtime.script import _is_zip

            if _is_zip(full):
                return None
        return os.path.dirname(full)


def parse(argv: "list[str]") -> Invocation:
    """Parse boot's command line (values are checked by :func:`codesuture.settings.load`).
    ``--`` ends the options: the next argument is the script. Raises UsageError (an
    empty message for ``--help``, ``--version`` for ``-V``/``--version``)."""
    valued, flags = _options()
    inv = Invocation()
    i = 0
    while i < len(argv):
        a = argv[i]
        name, eq, value = a.partition("=")
        if a == "--":
            if i + 1 < len(argv):
                inv.script, inv.args = argv[i + 1], argv[i + 2:]
            break
        if name in valued or a in ("-m", "-c"):
            if not eq:
                if i + 1 >= len(argv):
                    raise UsageError(f"{a} needs a value")
                value = argv[i + 1]
                i += 1
            if a == "-m":
                inv.module, inv.args = value, argv[i + 1 :]
                break
            if a == "-c":
                inv.code, inv.args = value, argv[i + 1 :]
                break
            inv.flags[valued[name]] = value
        elif a in flags:
            attr, flag_value = flags[a]
            inv.flags[attr] = flag_value
        elif a in ("-v", "--verbose"):
            inv.flags["verbose"] += 1
        elif a == "-vv":
            inv.flags["verbose"] += 2
        elif a in ("-q", "--quiet"):
            inv.flags["verbose"] = -1
        elif a in ("-h", "--help"):
            raise UsageError("")
        elif a in ("-V", "--version"):
            raise UsageError("--version")
        elif a.startswith("-") and a != "-":
            raise UsageError(f"unknown option {a}")
        else:
            inv.script, inv.args = a, argv[i + 1 :]
            break
        i += 1
    if inv.script is None and inv.module is None and inv.code is None:
        raise UsageError("nothing to run: give a script, an app folder or zip, -m module or -c code")
    return inv


def _python() -> str:
    """How python names itself in its own messages: the interpreter as it was invoked
    (``python``, ``/usr/bin/python3.12``...)."""
    argv = getattr(sys, "orig_argv", None)
    return argv[0] if argv else sys.executable


def version() -> str:
    """``codesuture X.Y.Z (Python A.B.C, /path/to/python)``."""
    from codesuture import __version__

    return f"codesuture {__version__} (Python {sys.version.split()[0]}, {sys.executable})"


def _help(doc: "str | None" = None, prog: str = "python -m codesuture.boot") -> str:
    from codesuture.settings import help_text

    return help_text(prog, doc if doc is not None else BOOT_DOC)


#: What ``python -m codesuture.boot --help`` says before the option list.
BOOT_DOC = """Install the overlay finder for the configured store (and, in dev mode, the healer),
then run the target as __main__ like `python script.py` / `python -m module` would.
Without a store setting no store is read: boot never reads ./overlays on its own.

Modes: dev (heal live, write overlays) unless a trust root, --require-signed or a
bundle makes it prod (load verified overlays only; a crash is logged as one line with
what would have been patched; --heal heals live and proposes the patch in the pending
directory). CODESUTURE_DISABLE=1 turns everything off: the target runs as with plain
python."""


def _target(inv: Invocation) -> "Any":
    """The script or ``-m`` module to run; prints Python's message and returns None
    when a module cannot be found."""
    from codesuture.runtime import script

    try:
        if inv.module:
            return script.module_target(inv.module, inv.args)
        if inv.code is not None:
            return script.code_target(inv.code, inv.args)
        return script.script_target(inv.script or "", inv.args)
    except ImportError as exc:
        print(f"{_python()}: {exc}", file=sys.stderr)
        return None


def prepare(argv: "list[str]", command: str = "boot", prog: str = "codesuture.boot", doc: "str | None" = None) -> "Any":
    """Parse *argv* and load the settings: ``(settings, target)`` ready for
    :func:`start`, or an exit code (help printed: 0; usage or configuration error: 2;
    target not found: 1 or 2, as python says) with the message already printed, or
    ``(None, target)`` when the kill switch is on. *command* is ``boot`` or ``run``
    (see :func:`codesuture.settings.load`); *prog* names the command in messages, *doc*
    replaces this module's docstring in ``--help``."""
    from codesuture import settings

    shown = prog if " " in prog else f"python -m {prog}"
    try:
        inv = parse(argv)
    except UsageError as exc:
        if not str(exc):
            print(_help(doc, shown))
            return 0
        if str(exc) == "--version":
            print(version())
            return 0
        print(f"{prog}: {exc}", file=sys.stderr)
        print(USAGE.replace("python -m codesuture.boot", shown), file=sys.stderr)
        print(f"Try '{shown} --help' for every option.", file=sys.stderr)
        return settings.EXIT_USAGE
    try:
        if settings.disabled():
            target = _target(inv)
            return 1 if target is None else (None, target)
        s = settings.load(inv.flags, os.environ, start_dir=inv.start_dir(), command=command,
                          store_dir=inv.store_dir() if command == "run" else None)
    except Exception as exc:
        from codesuture.errors import ConfigError  # imported only when a setting is invalid

        if not isinstance(exc, ConfigError):
            raise
        print(f"{prog}: {exc}", file=sys.stderr)
        return settings.EXIT_USAGE
    from codesuture import logs

    logs.request(logs.level_for(s.verbose))
    s.export()
    target = _target(inv)
    if target is None:
        return 1
    if target.source is None and target.spec is None and not os.path.isfile(target.path):
        given = os.path.join(os.getcwd(), target.argv[0]) if target.argv else target.path  # unnormalized, as python
        print(f"{_python()}: can't open file {given!r}: [Errno 2] No such file or directory", file=sys.stderr)
        return 2
    return s, target


def main(argv: "list[str] | None" = None) -> int:
    """Entry point; returns the exit code (see the module docstring)."""
    prepared = prepare(sys.argv[1:] if argv is None else argv)
    if isinstance(prepared, int):
        return prepared
    s, target = prepared
    if s is None:  # the kill switch: no finder, no healer, no environment exported
        from codesuture.runtime import script

        return script.run(target)
    from codesuture.runtime.session import summary

    code, session = start(s, target)
    line = summary(session)
    if line and s.verbose >= 0:
        print(line, file=sys.stderr)
    return code


#: :data:`codesuture.autostart.ENV` (that module is not imported here: one module less
#: to load on every start; a test checks the two agree).
_AUTOSTART_ENV = "CODESUTURE_AUTOSTART"


def start(s: "Settings", target: "Any", carry: "Any" = None) -> "tuple[int, Any]":
    """Set CodeSuture up for this process as *s* says (:func:`codesuture.runtime.session.activate`)
    and run *target*. *carry(session)*: the patch lines a replay hands on (``codesuture
    run``'s report). Returns ``(exit code, session)``."""
    from codesuture import settings
    from codesuture.runtime import script
    from codesuture.runtime.session import activate, killed

    os.environ[_AUTOSTART_ENV] = "1"  # autostart.arm(): processes started from here on activate too (the .pth hook)
    usable, session = activate(s)
    if killed():  # the kill switch, with no exception: no overlay (not even __main__'s), no heal
        return script.run(target), session
    session.verbose = s.verbose
    if not usable and s.require_overlays:
        return settings.EXIT_STORE_UNUSABLE, session
    heal = session.heal if (s.heal or s.prod) else None
    index = session.finder.index if session.finder is not None else None
    policy = getattr(session.finder, "_policy", None)
    # Replays (a fresh process) only in dev: prod loads reviewed overlays, it does not re-run;
    # and only with a store, where the fresh process finds the patch (replayable).
    replay = s.replay if not s.prod else "never"
    ignore = (s.overlays, s.pending, s.state_dir, s.incidents if s.incidents != "-" else None)
    from codesuture.runtime.session import carried

    return script.run(target, heal=heal, retries=s.retries, index=index, policy=policy, app_root=s.app_root,
                      replay=replay, ignore=ignore, replayable=s.overlays is not None,
                      carry=lambda: carried(session, carry(session) if carry is not None else [])), session


if __name__ == "__main__":
    sys.exit(main())
