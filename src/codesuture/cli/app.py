"""The ``codesuture`` command group: every command, assembled. Run it as the
``codesuture`` console script or ``python -m codesuture``."""

from __future__ import annotations

import logging

import click

from codesuture import __version__
from codesuture.cli import bundle, heal, review, trust


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="codesuture")
@click.option("-v", "--verbose", count=True, help="More log output (repeat for debug).")
def main(verbose: int) -> None:
    """Heal structural crashes in running Python programs and ship the hotfixes as
    signed code-object overlays."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="codesuture: %(levelname)s %(message)s")


for _command in (heal.run, heal.watch, trust.keygen, trust.sign, trust.verify, bundle.bundle, review.explain, review.audit,
                 review.rollback, review.rebuild):
    main.add_command(_command)
