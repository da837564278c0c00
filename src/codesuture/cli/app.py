"""The ``codesuture`` console script (and ``python -m codesuture``).

``--help``, ``--version``, ``run``, ``watch`` and ``doctor`` run inside the app's
environment, which may pin any ``click`` (or none): they are answered here and by
:mod:`codesuture.cli.launch` (standard library only) before click is imported. Every
other command is the click group of :mod:`codesuture.cli.group`, which needs ``click``
8.1 or later (the ``cli`` extra); with an older or missing click such a command stops
with one message saying so and how to install it (exit 2).
"""

from __future__ import annotations

import sys

#: Oldest click the review commands support.
CLICK_MIN = (8, 1)

#: Every command: (name, needs the cli extra, one-line summary), in the order --help lists them.
COMMANDS: tuple[tuple[str, bool, str], ...] = (
    ("run", False, "run a script, app folder or zip, -m module or -c code, healing crashes live (dev: writes "
                   "overlays/ beside the script) and replaying the run"),
    ("watch", False, "run a program under boot and restart it after each run that wrote a patch"),
    ("doctor", False, "what boot would do here: mode, store, trust root, state directory, every setting and its "
                      "source, installed extras"),
    ("keygen", True, "generate an Ed25519 signing key pair"),
    ("sign", True, "rebuild-check and sign overlays; a folder also gets its signed overlay set"),
    ("verify", True, "verify overlays, signed folders and bundles as the strictest load policy would"),
    ("bundle", True, "bundle create | verify: ship a signed folder as one file"),
    ("explain", True, "what each patch does, from its signed Statement"),
    ("audit", True, "every overlay as this host's loader would admit it, and against its source"),
    ("rollback", True, "take patches out of a store; withdrawn on this host for good"),
    ("rebuild", True, "the same patches for another interpreter"),
    ("suggest", True, "each patch as a source diff (patch -p1 / git apply)"),
    ("sbom", True, "a CycloneDX SBOM of a store (needs codesuture[sbom] too)"),
    ("incidents", True, "sum up an incidents file"),
    ("repro", True, "one pytest file per patch from its heal-time capture; --prove runs them"),
    ("prove", True, "run the app's tests without and with the overlays; fail on a regression"),
)

#: Exit codes of the review commands: (code, meaning).
EXIT_CODES = (
    ("0", "done: everything asked for was done and verified"),
    ("1", "failed, refused, or nothing to do: no overlays, a verification or audit failure, zero signed, "
          "no test summary..."),
    ("2", "usage error: a bad option or argument, or the command needs codesuture[cli] here"),
)


def _click_problem() -> str | None:
    """Why the installed click cannot run the review commands, or None."""
    from importlib import metadata

    try:
        found = metadata.version("click")
    except metadata.PackageNotFoundError:
        return "click is not installed"
    parts = []
    for piece in found.split(".")[:2]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits) if digits else 0)
    if tuple(parts) < CLICK_MIN:
        return f"click {found} is installed (this environment pins it)"
    return None


def help_text(problem: str | None) -> str:
    """``codesuture --help``: every command, those that need the ``cli`` extra marked
    when *problem* (why click cannot run here) is set, and the exit codes."""
    import textwrap

    from codesuture import settings

    lines = ["usage: codesuture [-v | -q] COMMAND [ARGS]...", "       codesuture COMMAND --help",
             "       python -m codesuture.boot [options] (script.py | -m module | ...)   (see its --help)", "",
             "Heal structural crashes in running Python programs and ship the hotfixes as signed code-object",
             "overlays.", "", "Commands:"]
    for name, needs_cli, summary in COMMANDS:
        mark = "[needs codesuture[cli]] " if needs_cli and problem else ""
        lines += textwrap.wrap(mark + summary, 88, initial_indent=f"  {name:<10} ", subsequent_indent=" " * 13)
    if problem:
        lines += ["", *textwrap.wrap(f"Commands marked [needs codesuture[cli]] need click "
                                     f"{'.'.join(map(str, CLICK_MIN))} or later, and {problem}: "
                                     "pip install 'codesuture[cli]' (or, where the app pins an older click, "
                                     "pipx install 'codesuture[cli]' and run them from there).", 88)]
    lines += ["", "Options:", "  -v, --verbose  more log output (repeat for debug)",
              "  -q, --quiet    only errors from CodeSuture's own log handler",
              "  -V, --version  print CodeSuture's and Python's versions and exit",
              "  -h, --help     print this help and exit", "", "Exit codes (review commands):"]
    for code, text in EXIT_CODES:
        lines += textwrap.wrap(text, 88, initial_indent=f"  {code:<5}", subsequent_indent=" " * 7)
    lines += textwrap.wrap("For run and watch: the program's own exit code, 1 after an unhandled exception, 2 for a "
                           f"usage or configuration error, {settings.EXIT_STORE_UNUSABLE} when --require-overlays "
                           f"finds no usable store, {settings.EXIT_INTERRUPTED} after Ctrl-C "
                           "(codesuture run --help).", 88, initial_indent="  ", subsequent_indent="  ")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Run the command line *argv* (default ``sys.argv[1:]``) and exit with its code."""
    try:
        _main(argv)
    except BrokenPipeError:  # `codesuture --help | head`: as quiet as a shell tool is
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)


def _main(argv: list[str] | None) -> None:
    from codesuture.settings import EXIT_USAGE

    argv = list(sys.argv[1:] if argv is None else argv)
    verbose, i = 0, 0
    while i < len(argv) and argv[i] in ("-v", "-vv", "--verbose", "-q", "--quiet"):
        verbose = -1 if argv[i] in ("-q", "--quiet") else verbose + (2 if argv[i] == "-vv" else 1)
        i += 1
    first = argv[i] if i < len(argv) else None
    if first in (None, "-h", "--help", "help") and not argv[i + 1:]:
        print(help_text(_click_problem()), file=sys.stdout if first else sys.stderr)
        sys.exit(0 if first else EXIT_USAGE)
    if first in ("-V", "--version"):
        from codesuture.boot import version

        print(version())
        sys.exit(0)
    if first in ("run", "watch", "doctor"):
        from codesuture.cli import launch

        sys.exit(launch.COMMANDS[first](argv[i + 1:], verbose))
    problem = _click_problem()
    if problem is not None:
        known = {name for name, _, _ in COMMANDS}
        what = f"`codesuture {first}`" if first in known else "the review commands"
        print(f"codesuture: {what} needs click {'.'.join(map(str, CLICK_MIN))} or later, and {problem}. "
              "`codesuture run`, `watch` and `doctor` work here as they are; install 'codesuture[cli]' here, or run "
              "the review commands from CodeSuture's own install (pipx install 'codesuture[cli]'). "
              "`codesuture --help` lists every command.", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    from codesuture.cli.group import cli

    cli.main(args=argv, prog_name="codesuture")


__all__ = ["main", "CLICK_MIN", "COMMANDS", "EXIT_CODES", "help_text"]
