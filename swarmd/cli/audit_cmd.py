"""`swarm ledger audit ROUND | --rounds all`: recompute finalized rounds from their committed updates
and compare each with the model the chain says was merged (see `swarmd.audit`).

Runs with a member site's config: its keys (the transport lets only active members fetch), its
chain, its task (the merge rule and the leader's checks) and its checkpoint store. Exit status:
0 every audited round verified, 10 a MISMATCH, 11 a round that could not be audited (and no
mismatch); the named errors' own codes otherwise (2 unknown or unfinalized round, 6 chain).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from swarmd.cli.common import cli_errors, console, print_json
from swarmd.errors import UsageError

if TYPE_CHECKING:
    from swarmd.audit import RoundVerdict
    from swarmd.config import SiteConfig
    from swarmd.ledger import Ledger, RoundInfo
    from swarmd.task import Task

_STYLE = {"verified": "green", "MISMATCH": "bold red", "cannot audit": "yellow"}


def audit(
    round_: int | None = typer.Argument(None, metavar="[ROUND]", help="The round to audit."),
    rounds: str | None = typer.Option(None, "--rounds", help="`all`: every finalized round."),
    config: Path = typer.Option(
        Path(os.environ.get("SWARMD_CONFIG", "/etc/swarmd/site.toml")),
        "--config",
        help="A member site's site.toml (its keys, chain, task and store).",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Recompute finalized rounds from their committed updates; exit 10 on a MISMATCH, 11 if a round
    could not be audited."""
    from swarmd.audit import exit_status

    with cli_errors():
        if (round_ is None) == (rounds is None):
            raise UsageError("give one ROUND or --rounds all")
        if rounds is not None and rounds != "all":
            raise UsageError(f"--rounds takes `all`, got {rounds!r}")
        verdicts = _audit(config, round_)
    if json_out:
        print_json([v.to_json() for v in verdicts])
    elif not verdicts:
        console.print("no finalized round to audit yet")
    for v in [] if json_out else verdicts:
        console.print(v.line(), style=_STYLE[v.status.value], highlight=False, soft_wrap=True)
    raise typer.Exit(int(exit_status(verdicts)))


def _audit(config: Path, r: int | None) -> list[RoundVerdict]:
    from swarmd.audit import UnknownRound
    from swarmd.config import load_config
    from swarmd.daemon.site import check_task_binding, site_identity, site_ledger
    from swarmd.task import load_task

    cfg = load_config(config)
    task = load_task(cfg.site.task)
    ident = site_identity(cfg)
    ledger = site_ledger(cfg, ident)
    check_task_binding(ledger, task)  # the rule and the checks are the task the chain is bound to
    current = ledger.current_round()
    if r is not None and not 0 <= r <= current:
        raise UnknownRound(f"round {r} does not exist: the chain is at round {current}")
    infos = [ledger.round(r)] if r is not None else ledger.rounds()
    return asyncio.run(
        _recompute(
            cfg,
            ident.address,
            (ident.curve.public, ident.curve.secret),
            ledger,
            infos,
            task,
            single=r is not None,
        )
    )


async def _recompute(
    cfg: SiteConfig,
    me: str,
    curve: tuple[bytes, bytes],
    ledger: Ledger,
    infos: list[RoundInfo],
    task: Task,
    *,
    single: bool,
) -> list[RoundVerdict]:
    from swarmd.audit import UpdateSource, audit_round, audit_rounds

    source = UpdateSource(
        store_dir=cfg.site.state_dir / "checkpoints",
        me=me,
        curve_public=curve[0],
        curve_secret=curve[1],
        members=ledger.members(),
        max_bytes=task.swarm.max_update_bytes,
        bulk="curve" if cfg.transport.bulk == "curve" else "aead",
    )
    async with source:
        if single:
            return [await audit_round(infos[0], task.swarm, source)]  # unfinalized: a named error
        return await audit_rounds(infos, task.swarm, source)


def register(app: typer.Typer) -> None:
    from swarmd.cli.ledger_cmd import ledger_app

    ledger_app.command("audit")(audit)
