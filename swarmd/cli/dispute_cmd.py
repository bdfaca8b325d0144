"""`swarm ledger dispute ROUND | --all`: publish the leader's delivery receipt this site kept against a
finalize that called its update not delivered; the contract records the dispute against that leader.

Runs with the site's own config: its key signs the transaction (the contract takes the dispute only from the
committer), its state dir holds the receipts. Exit status: 0 recorded; a refusal's own status otherwise
(`swarmd.ops.dispute`: 20 no receipt, 21 not finalized, 22 not a committer, 23 included, 24 excluded for a
reason a receipt does not contradict, 25 a receipt of another term or leader, 26 already disputed); 4 an
unreadable receipt file, 6 the chain (unreachable, or a revert), 2 and 3 config and keys.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from swarmd.cli.common import cli_errors, console, err_console, print_json
from swarmd.cli.rounds_view import site_label
from swarmd.errors import SwarmError, UsageError, exit_code

if TYPE_CHECKING:
    from swarmd.ops.dispute import DisputeRecord


def _who(names: dict[str, str], account: str) -> str:
    name = names.get(account.lower())
    return f"{name} ({account})" if name else account


def _recorded_text(rec: DisputeRecord, names: dict[str, str]) -> str:
    return (
        f"round {rec.round}: disputed: {_who(names, rec.site)} against leader {_who(names, rec.leader)}; "
        f"disputes recorded against {site_label(names, rec.leader, 42)}: {rec.disputes_against} "
        f"(block {rec.block}, tx {rec.tx_hash})"
    )


def _benign(exc: SwarmError) -> bool:
    from swarmd.ops.dispute import ROUTINE_REFUSALS

    return isinstance(exc, ROUTINE_REFUSALS)


def dispute(
    round_: int | None = typer.Argument(None, metavar="[ROUND]", min=0, help="The round to dispute."),
    all_rounds: bool = typer.Option(False, "--all", help="Every round this site keeps a receipt for."),
    config: Path = typer.Option(
        Path(os.environ.get("SWARMD_CONFIG", "/etc/swarmd/site.toml")),
        "--config",
        help="This site's site.toml (its key signs; its state dir holds the receipts).",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Publish the round leader's receipt for this site's update when the finalize called it not delivered
    (NOT_DELIVERED, HASH_MISMATCH, RECOVERED): the contract checks the leader's signature and records a
    dispute against that leader. Checked before anything is sent; each refusal exits with its own status."""
    from swarmd.config import load_config
    from swarmd.daemon.receipts import ReceiptBook
    from swarmd.daemon.site import site_ledger
    from swarmd.ops import dispute as disp

    with cli_errors():
        if (round_ is None) == (not all_rounds):
            raise UsageError("give one ROUND or --all")
        cfg = load_config(config)
        ledger = site_ledger(cfg)
        book = ReceiptBook(cfg.site.state_dir)
        current = ledger.current_round()
        if round_ is not None and round_ > current:
            raise UsageError(f"round {round_} does not exist (current round: {current})")
        rounds = [round_] if round_ is not None else disp.disputable_rounds(book, current)
        results = disp.dispute_all(ledger, book, rounds)
        names = {a.lower(): n for a, n in ledger.site_names().items()}
        if round_ is not None and isinstance(results[0][1], SwarmError):
            raise results[0][1]
    failed = [exc for _, exc in results if isinstance(exc, SwarmError) and not _benign(exc)]
    if json_out:
        docs = [_json(r, res, names) for r, res in results]
        print_json(docs[0] if round_ is not None else docs)
    else:
        if not results:
            console.print(f"no receipts kept under {book.dir}: nothing to dispute")
        for r, res in results:
            if isinstance(res, SwarmError):
                out = console if _benign(res) else err_console
                out.print(
                    f"round {r}: not disputed: {type(res).__name__}: {res}", highlight=False, markup=False
                )
            else:
                console.print(_recorded_text(res, names), highlight=False, markup=False)
    if failed:
        raise typer.Exit(exit_code(failed[0]))


def _json(r: int, res: DisputeRecord | SwarmError, names: dict[str, str]) -> dict[str, object]:
    if isinstance(res, SwarmError):
        error = type(res).__name__
        return {
            "round": r,
            "disputed": False,
            "error": error,
            "message": str(res),
            "exit_code": exit_code(res),
        }
    named = {"site_name": names.get(res.site.lower()), "leader_name": names.get(res.leader.lower())}
    return {"disputed": True, **res.to_json(), **named}


def register(app: typer.Typer) -> None:
    from swarmd.cli.ledger_cmd import ledger_app

    ledger_app.command("dispute")(dispute)
