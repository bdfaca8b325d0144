"""`swarmd`: the site daemon."""

from __future__ import annotations

import typer

from swarmd import __version__

app = typer.Typer(name="swarmd", add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True)


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(f"swarmd {__version__}")


@app.callback()
def _root() -> None:
    """The swarmd site daemon."""


def main() -> None:
    app()
