"""`swarm model export`: a round's merged model written into a copy of the task's bundle."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from swarmd.cli.common import cli_errors, console, err_console

if TYPE_CHECKING:
    from swarmd.config import SiteConfig
    from swarmd.ledger import Ledger

model_app = typer.Typer(help="Work with merged models.", no_args_is_help=True)


@model_app.command()
def export(
    round_number: int = typer.Option(..., "--round", help="The round whose merged model to export."),
    out: Path = typer.Option(
        ..., "--out", help="New directory: a copy of the bundle with the merged weights."
    ),
    config: Path = typer.Option(..., "--config", help="A site.toml whose state dir holds the model."),
) -> None:
    """Export the merged model of a round (verified against the chain) as a MONAI bundle. Warns (on stderr)
    when an auditor attested that a round in the model's history failed its audit."""
    from swarmd.config import load_config
    from swarmd.ops.attestations import attestations_by_round, failed_audits
    from swarmd.ops.export import export_bundle

    with cli_errors():
        cfg = load_config(config)
        path = export_bundle(cfg, round_number, out)
        failed = failed_audits(attestations_by_round(_ledger_of(cfg)), range(round_number + 1))
    console.print(f"exported round {round_number} to {path}")
    for r, auditors in failed.items():
        err_console.print(
            f"[yellow]warning[/]: round {r} in this model's history has a failed attestation "
            f"(by {', '.join(auditors)}); see `swarm ledger round {r}`",
            highlight=False,
        )
    console.print("weights: models/model.safetensors; inference: configs/inference.json")


def _ledger_of(cfg: SiteConfig) -> Ledger:
    from swarmd.ledger import Ledger

    return Ledger(cfg.chain.rpc_url, cfg.chain.contract, poa=cfg.chain.poa)


def register(app: typer.Typer) -> None:
    app.add_typer(model_app, name="model")
