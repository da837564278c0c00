"""What several commands share: passphrases, host state, result printing."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from codesuture.errors import CodeSutureError


def passphrase(var: str | None) -> str | None:
    """The passphrase in environment variable *var* (None when no variable is named)."""
    if not var:
        return None
    value = os.environ.get(var)
    if value is None:
        raise click.UsageError(f"--passphrase-env {var}: that environment variable is not set")
    return value


def failure(exc: CodeSutureError) -> click.ClickException:
    """The error as the CLI prints it: one line, control characters escaped (paths,
    names and key ids in it may come from a store, a bundle or an envelope)."""
    from codesuture.logs import escape

    return click.ClickException(escape(str(exc)))


def state_dir() -> str | None:
    """This host's state folder from the settings (None when they are invalid)."""
    from codesuture import settings

    try:
        return settings.load(environ=os.environ).state_dir
    except CodeSutureError:
        return None


def print_results(results: list[Any], as_json: bool) -> None:
    """Print verify results (one line each, or JSON) and exit 0 when all are OK."""
    ok = bool(results) and all(r.ok for r in results)
    if as_json:
        click.echo(json.dumps({"ok": ok, "results": [r.to_json() for r in results]}, indent=2))
    else:
        from codesuture.logs import escape

        for r in results:
            if r.ok:
                extra = f" module {r.module}" if r.module else ""
                extra += f", expires {r.expires}" if r.expires else ""
                extra += f", {r.reason}" if r.reason else ""
                click.echo(escape(f"OK {r.path} (signer {r.signer}{extra})"))
            else:
                click.echo(escape(f"FAIL {r.path}: {r.reason}"))
    sys.exit(0 if ok else 1)
