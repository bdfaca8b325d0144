"""`swarm chain besu-kit`: the files for a real consortium chain (Hyperledger Besu, QBFT), one validator
per hospital. Only writes files; swarmd never runs Besu (docs/deploy.md)."""

from __future__ import annotations

from pathlib import Path

import typer

from swarmd.cli.common import cli_errors, console, print_json

chain_app = typer.Typer(help="A production chain for the consortium (Besu QBFT).", no_args_is_help=True)


@chain_app.command("besu-kit")
def besu_kit_cmd(
    validators: int = typer.Option(
        4, "--validators", help="Validator nodes, one per hospital (4 tolerate 1 fault)."
    ),
    out: Path = typer.Option(..., "--out", help="A new directory for the kit."),
    hosts: list[str] = typer.Option(
        [], "--host", help="Each node's host as the others reach it, once per node (default: 127.0.0.1)."
    ),
    chain_id: int = typer.Option(
        1337, "--chain-id", min=1, help="The chain id (unique to this network; wallets sign for it)."
    ),
    block_period: int = typer.Option(2, "--block-period", help="Seconds per block."),
    fund: list[str] = typer.Option([], "--fund", help="An account genesis gives ether to (repeat per site)."),
    json_out: bool = typer.Option(False, "--json", help="Print the kit as JSON."),
) -> None:
    """Write genesis.json (QBFT, the validators in its extraData), a key (0600) and a Besu config.toml per
    node, static-nodes.json and bootnodes.txt, and validators.json."""
    from swarmd.ops.besu import besu_kit

    with cli_errors():
        kit = besu_kit(
            out, validators=validators, hosts=hosts, chain_id=chain_id, block_period=block_period, fund=fund
        )
    rows = [
        {"name": v.name, "address": v.address, "enode": v.enode, "folder": str(v.folder)}
        for v in kit.validators
    ]
    if json_out:
        print_json({"genesis": str(kit.genesis), "chain_id": kit.chain_id, "validators": rows})
        return
    console.print(f"wrote {kit.genesis} (chain id {kit.chain_id}, QBFT, {len(rows)} validators)")
    for r in rows:
        console.print(f"  {r['name']}: validator {r['address']}  {r['folder']}/config.toml", highlight=False)
    console.print(
        f"tolerates {kit.faults_tolerated} faulty validator(s); keys are 0600 files: move each node's"
    )
    console.print("folder to its hospital and start Besu there: besu --config-file=config.toml")


def register(app: typer.Typer) -> None:
    app.add_typer(chain_app, name="chain")
