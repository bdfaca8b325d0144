"""`swarm ledger audit ROUND | --rounds all`: recompute finalized rounds from their committed updates
(under secure aggregation: the masked updates and the leader's unmask transcript) and compare each
with the model the chain says was merged (see `swarmd.audit`).

Runs with a member site's config: its keys (the transport lets only active members fetch), its
chain, its task (the merge rule and the leader's checks) and its checkpoint store; `--devnet DIR` takes
a local devnet's first site and reads every local site's store (and kept unmask transcripts) too (all
on this disk, each update still held to its commitment), so a devnet whose daemons have stopped can be
audited. `--attest`
publishes each verdict on chain (`attest(round, ok)`, an Attested event) unless this site's latest
attestation of that round already says the same. Exit status:
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
    from swarmd.ops import LocalConsortium
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
    devnet: Path | None = typer.Option(
        None,
        "--devnet",
        help="A local devnet's directory: audit as its first site, reading all its sites' stores.",
    ),
    attest: bool = typer.Option(False, "--attest", help="Publish each verdict on chain (Attested events)."),
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
        config, stores = _devnet_site(devnet) if devnet is not None else (config, [])
        ledger, verdicts = _audit(config, round_, stores)
        published = _attest(ledger, verdicts) if attest else []
    if json_out:
        print_json([{**v.to_json(), "attested": v.round in published} for v in verdicts])
    elif not verdicts:
        console.print("no finalized round to audit yet")
    for v in [] if json_out else verdicts:
        console.print(v.line(), style=_STYLE[v.status.value], highlight=False, soft_wrap=True)
    if published and not json_out:
        console.print(f"attested on chain: rounds {', '.join(map(str, published))}")
    raise typer.Exit(int(exit_status(verdicts)))


def _devnet_site(root: Path) -> tuple[Path, list[Path]]:
    from swarmd.ops import LocalConsortium

    return consortium_auditor(LocalConsortium.load(root))


def consortium_auditor(consortium: LocalConsortium) -> tuple[Path, list[Path]]:
    """A local consortium's first site config, and every site's checkpoint store."""
    from swarmd.config import load_config

    if not consortium.sites:
        raise UsageError(f"the consortium in {consortium.root} has no sites to audit as")
    stores = [load_config(s.config).site.state_dir / "checkpoints" for s in consortium.sites]
    return consortium.sites[0].config, stores


def audit_summary(verdicts: list[RoundVerdict], auditor: str) -> str:
    """One line: how many finalized rounds `auditor` recomputed, by verdict, naming the rounds that are
    not verified."""
    from swarmd.audit import Status

    if not verdicts:
        return "audit: no finalized round to recompute"
    counts = {s: [v.round for v in verdicts if v.status is s] for s in Status}
    parts = [f"{len(counts[Status.VERIFIED])} verified"]
    others = [(s, rs) for s, rs in counts.items() if rs and s is not Status.VERIFIED]
    parts += [f"{s.value} {', '.join(map(str, rs))}" for s, rs in others]
    return (
        f"audit (`swarm ledger audit`): {auditor} recomputed {len(verdicts)} finalized "
        f"round{'' if len(verdicts) == 1 else 's'} from the committed updates: {'; '.join(parts)}"
    )


def audit_consortium(consortium: LocalConsortium) -> list[RoundVerdict]:
    """Every finalized round of a local consortium, recomputed as its first site (all stores read)."""
    config, stores = consortium_auditor(consortium)
    return _audit(config, None, stores)[1]


def _attest(ledger: Ledger, verdicts: list[RoundVerdict]) -> list[int]:
    """Publish verified / mismatched verdicts (not the rounds that could not be audited); returns the
    rounds attested now. A round whose latest attestation by this site says the same is left alone."""
    from swarmd.audit import Status

    me = (ledger.sender or "").lower()
    latest = {a.round: a.ok for a in ledger.attestations() if a.auditor.lower() == me}
    published = []
    for v in verdicts:
        if v.status is Status.CANNOT_AUDIT:
            continue
        ok = v.status is Status.VERIFIED
        if latest.get(v.round) is not ok:
            ledger.attest(v.round, ok)
            published.append(v.round)
    return published


def _audit(config: Path, r: int | None, stores: list[Path]) -> tuple[Ledger, list[RoundVerdict]]:
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
    curve = (ident.curve.public, ident.curve.secret)
    verdicts = asyncio.run(
        _recompute(cfg, ident.address, curve, ledger, infos, task, stores, single=r is not None)
    )
    return ledger, verdicts


async def _recompute(
    cfg: SiteConfig,
    me: str,
    curve: tuple[bytes, bytes],
    ledger: Ledger,
    infos: list[RoundInfo],
    task: Task,
    stores: list[Path],
    *,
    single: bool,
) -> list[RoundVerdict]:
    from swarmd.audit import KeySets, UpdateSource, audit_round, audit_rounds
    from swarmd.compress import Encoding
    from swarmd.privacy import SecAggParams

    source = UpdateSource(
        store_dir=cfg.site.state_dir / "checkpoints",
        me=me,
        curve_public=curve[0],
        curve_secret=curve[1],
        members=ledger.members(),
        max_bytes=task.swarm.max_update_bytes,
        bulk="curve" if cfg.transport.bulk == "curve" else "aead",
        more_stores=stores,
        own_updates=_own_updates(cfg.site.state_dir),
        shard_leaves=task.exchange.leaves,
    )
    keysets = KeySets(SecAggParams.from_settings(task.privacy), ledger.advertised_keys)
    cyclic, sharded = task.round.mode == "cyclic", task.exchange.topology == "sharded"
    enc = Encoding.of(task.exchange)
    async with source:
        if single:  # an unfinalized round: a named error
            verdict = await audit_round(
                infos[0], task.swarm, source, keysets, cyclic=cyclic, sharded=sharded, encoding=enc
            )
            return [verdict]
        return await audit_rounds(
            infos, task.swarm, source, keysets, cyclic=cyclic, sharded=sharded, encoding=enc
        )


def _own_updates(state_dir: Path) -> dict[int, bytes]:
    """Round -> the content hash of this site's committed update, from its journal ({} without one)."""
    from swarmd.daemon.store import Journal
    from swarmd.errors import JournalError

    try:
        journal = Journal.read(state_dir / "journal.json")
    except JournalError:
        return {}
    return {rec.round: rec.update_hash for rec in journal.records() if rec.committed and rec.update_hash}


def register(app: typer.Typer) -> None:
    from swarmd.cli.ledger_cmd import ledger_app

    ledger_app.command("audit")(audit)
