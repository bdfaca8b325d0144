"""`swarm model export`: a round's merged model written into a copy of the task's bundle."""

from __future__ import annotations

from pathlib import Path

import typer

from swarmd.cli.common import cli_errors, console

model_app = typer.Typer(help="Work with merged models.", no_args_is_help=True)


@model_app.command()
def export(
    round_number: int = typer.Option(..., "--round", help="The round whose merged model to export."),
    out: Path = typer.Option(
        ..., "--out", help="New directory: a copy of the bundle with the merged weights."
    ),
    config: Path = typer.Option(..., "--config", help="A site.toml whose state dir holds the model."),
) -> None:
    """Export the merged model of a round (verified against the chain) as a MONAI bundle."""
    from swarmd.config import load_config
    from swarmd.ops.export import export_bundle

    with cli_errors():
        path = export_bundle(load_config(config), round_number, out)
    console.print(f"exported round {round_number} to {path}")
    console.print("weights: models/model.safetensors; inference: configs/inference.json")


def register(app: typer.Typer) -> None:
    app.add_typer(model_app, name="model")
