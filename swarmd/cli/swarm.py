"""`swarm`: the admin and inspection CLI. Each command group lives in its own module."""

from __future__ import annotations

import typer

from swarmd import __version__

app = typer.Typer(
    name="swarm",
    help="swarmd admin: identities, membership, the ledger, the devnet, demo data and benchmarks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"swarm {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """swarmd admin CLI."""


def _register() -> None:
    # Each module adds its commands to `app`; importing them here keeps this file the only index.
    import importlib

    for name in (
        "site_cmd",
        "admin_cmd",
        "ledger_cmd",
        "audit_cmd",
        "devnet_cmd",
        "data_cmd",
        "model_cmd",
        "task_cmd",
        "status_cmd",
        "bench_cmd",
        "chain_cmd",
        "dispute_cmd",
    ):
        try:
            module = importlib.import_module(f"swarmd.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"swarmd.cli.{name}":
                continue  # command group not built yet
            raise
        module.register(app)


_register()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
