"""The command line (SPEC §7). ``main(argv) -> int``; only this package prints.

The group and shared options are in :mod:`.common`; each module adds its commands to
the group when imported here: :mod:`.serve` (``run``, ``demo``), :mod:`.configuration`
(``example-config``, ``check-config``, ``plugins``, ``probe``), :mod:`.watch` and
:mod:`.state`."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from ..errors import ViberExporterError
from . import configuration, serve, state, watch  # noqa: F401 - each adds its commands to the group
from .common import cli

__all__ = ["cli", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code (0 success, 1 failure, 2 usage error)."""
    try:
        cli.main(
            args=list(argv) if argv is not None else sys.argv[1:],
            prog_name="viber-exporter",
            standalone_mode=False,
        )
    except click.exceptions.Exit as e:
        return int(e.exit_code)
    except click.ClickException as e:
        e.show()
        return int(e.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 1
    except ViberExporterError as e:
        click.echo(f"viber-exporter: {e}", err=True)
        return 1
    return 0
