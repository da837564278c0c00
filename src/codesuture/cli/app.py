"""The ``codesuture`` console script (and ``python -m codesuture``).

``run`` and ``watch`` run inside the app's environment, which may pin any ``click``:
they are dispatched to :mod:`codesuture.cli.launch` (standard library only) before
click is imported. Every other command is the click group of
:mod:`codesuture.cli.group`, which needs ``click`` 8.1 or later (the ``cli`` extra);
with an older or missing click the command stops with one message saying so and how
to run the review tools from their own install.
"""

from __future__ import annotations

import sys

#: Oldest click the review commands support.
CLICK_MIN = (8, 1)


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


def main(argv: list[str] | None = None) -> None:
    """Run the command line *argv* (default ``sys.argv[1:]``) and exit with its code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose, i = 0, 0
    while i < len(argv) and argv[i] in ("-v", "-vv", "--verbose"):
        verbose += 2 if argv[i] == "-vv" else 1
        i += 1
    if i < len(argv) and argv[i] in ("run", "watch"):
        from codesuture.cli import launch

        sys.exit(launch.run(argv[i + 1:], verbose) if argv[i] == "run" else launch.watch(argv[i + 1:]))
    problem = _click_problem()
    if problem is not None:
        from codesuture.settings import EXIT_USAGE

        print(f"codesuture: the review commands need click {'.'.join(map(str, CLICK_MIN))} or later, and {problem}. "
              "`codesuture run` and `codesuture watch` work here as they are; run the others from CodeSuture's own "
              "install (e.g. `pipx install 'codesuture[cli]'`) or install 'codesuture[cli]' here.", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    from codesuture.cli.group import cli

    cli.main(args=argv, prog_name="codesuture")


__all__ = ["main", "CLICK_MIN"]
