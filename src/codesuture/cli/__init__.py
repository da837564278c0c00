"""The ``codesuture`` command line: parse, call the library, print. Nothing else.

Each command family lives in its own module and registers itself on :data:`main`.
"""

from __future__ import annotations

import logging

import click

from codesuture import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="codesuture")
@click.option("-v", "--verbose", count=True, help="More log output (repeat for debug).")
def main(verbose: int) -> None:
    """Heal structural crashes in running Python programs and ship the hotfixes as
    signed code-object overlays."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="codesuture: %(levelname)s %(message)s")


def _register() -> None:
    # Imported for their side effect of adding commands to ``main``.
    from codesuture.cli import heal, trust, bundle, review  # noqa: F401


_register()
