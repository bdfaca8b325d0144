"""`swarm ledger ...`: read the audit trail. Members, rounds, one round, privacy (epsilon per site per
round), export, watch, verify, plot.

Read-only: needs an RPC URL and a contract address, from --config, from --rpc/--contract, or from
the local devnet's consortium.json (the default, for a devnet on this machine).
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from swarmd.cli.common import cli_errors, console, print_json
from swarmd.cli.rounds_view import mode_text, path_text, rounds_summary, rounds_table
from swarmd.errors import ConfigError, UsageError

if TYPE_CHECKING:
    from swarmd.ledger import Ledger
    from swarmd.task import Task

ledger_app = typer.Typer(
    help="Inspect the on-chain ledger: who contributed what, in which round.", no_args_is_help=True
)

ConfigOpt = typer.Option(None, "--config", help="A site.toml naming the chain and contract.")
RpcOpt = typer.Option(None, "--rpc", help="JSON-RPC URL (with --contract).")
ContractOpt = typer.Option(None, "--contract", help="SwarmLedger address (with --rpc).")
DevnetOpt = typer.Option(Path(".devnet"), "--devnet", help="Local devnet directory (the default source).")
JsonOpt = typer.Option(False, "--json", help="Print JSON.")


def _ledger(config: Path | None, rpc: str | None, contract: str | None, devnet: Path):
    from swarmd.ledger import Ledger

    if config is not None:
        from swarmd.config import load_config

        cfg = load_config(config)
        if not cfg.chain.contract:
            raise ConfigError(f"{config} names no contract", hint="run `swarm join --contract ...`")
        return Ledger(cfg.chain.rpc_url, cfg.chain.contract, poa=cfg.chain.poa)
    if rpc or contract:
        if not (rpc and contract):
            raise UsageError("--rpc and --contract go together")
        return Ledger(rpc, contract)
    from swarmd.ops import LocalConsortium

    c = LocalConsortium.load(devnet)
    return Ledger(c.rpc_url, c.contract)


def _task_rounds(config: Path | None, rpc: str | None, devnet: Path) -> int | None:
    """The task's number of rounds, where the task file is at hand (the chain does not record it)."""
    task = _task_at_hand(config, rpc, devnet)
    return None if task is None else task.swarm.rounds  # None: the summary speaks of the latest model


def _cyclic(config: Path | None, rpc: str | None, devnet: Path) -> bool:
    """Whether the task at hand runs cyclic rounds (the chain does not record it either)."""
    task = _task_at_hand(config, rpc, devnet)
    return task is not None and task.round.mode == "cyclic"


def _task_at_hand(config: Path | None, rpc: str | None, devnet: Path) -> Task | None:
    from swarmd.errors import SwarmError
    from swarmd.task import load_task

    try:
        if config is not None:
            from swarmd.config import load_config

            return load_task(load_config(config).site.task)
        if rpc is None:
            from swarmd.ops import LocalConsortium

            return load_task(LocalConsortium.load(devnet).task)
    except SwarmError:
        pass
    return None


def _names(ledger: Ledger) -> dict[str, str]:
    """lowercase account -> the site name it joined under."""
    return {a.lower(): n for a, n in ledger.site_names().items()}


@ledger_app.command()
def members(
    config: Path | None = ConfigOpt,
    rpc: str | None = RpcOpt,
    contract: str | None = ContractOpt,
    devnet: Path = DevnetOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Every site that ever asked to join: site name, account, status, endpoint, CURVE key, and the disputes
    recorded against it as a leader (`swarm ledger dispute`)."""
    with cli_errors():
        ledger = _ledger(config, rpc, contract, devnet)
        rows = ledger.members()
        names = _names(ledger)
        disputes = {m.account: ledger.disputes_against(m.account) for m in rows}
    if json_out:
        print_json(
            [
                {"name": names.get(m.account.lower()), **m.to_json(), "disputes_against": disputes[m.account]}
                for m in rows
            ]
        )
        return
    t = Table(title=f"members ({sum(m.status.name == 'ACTIVE' for m in rows)} active)")
    for col in ("site", "account", "status", "endpoint", "curve key", "disputes against"):
        t.add_column(col)
    for m in rows:
        name = names.get(m.account.lower(), "-")
        key = "0x" + m.curve_key.hex()[:16] + ".."
        t.add_row(name, m.account, m.status.name.lower(), m.endpoint, key, str(disputes[m.account]))
    console.print(t)


@ledger_app.command()
def rounds(
    config: Path | None = ConfigOpt,
    rpc: str | None = RpcOpt,
    contract: str | None = ContractOpt,
    devnet: Path = DevnetOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Every round: status, mode (plain or secure aggregation), leader, term, commits, samples, included and
    recovered sites, the merged model, what auditors attested about it and the disputes against its leader."""
    from swarmd.ops.attestations import attestation_text, attestations_by_round
    from swarmd.ops.dispute import dispute_text, disputes_by_round

    with cli_errors():
        ledger = _ledger(config, rpc, contract, devnet)
        infos = ledger.rounds()
        audits = attestations_by_round(ledger)
        disputed = disputes_by_round(ledger)
        total = _task_rounds(config, rpc, devnet)
        names = {} if json_out else _names(ledger)
        cyclic = _cyclic(config, rpc, devnet)
    if json_out:
        print_json(
            [
                {
                    **i.to_json(),
                    "attestations": [a.to_json() for a in audits.get(i.round, [])],
                    "disputes": [d.to_json() for d in disputed.get(i.round, [])],
                }
                for i in infos
            ]
        )
    else:
        console.print(rounds_table(infos, names, cyclic=cyclic))
        for r in sorted(audits):
            console.print(f"round {r} attestations: {attestation_text(audits[r], names)}", highlight=False)
        for r in sorted(disputed):
            console.print(f"round {r} disputes: {dispute_text(disputed[r], names)}", highlight=False)
        console.print(rounds_summary(infos, total), highlight=False)


@ledger_app.command("round")
def round_(
    number: int = typer.Argument(..., help="Round number."),
    config: Path | None = ConfigOpt,
    rpc: str | None = RpcOpt,
    contract: str | None = ContractOpt,
    devnet: Path = DevnetOpt,
    json_out: bool = JsonOpt,
) -> None:
    """One round in full: every commit (revealed or not, and its finalize outcome), the leader, failed
    leaders, hashes, what auditors attested about it and the disputes against its leader."""
    from swarmd.ops.attestations import attestation_text, attestations_by_round
    from swarmd.ops.dispute import dispute_text, disputes_by_round

    with cli_errors():
        ledger = _ledger(config, rpc, contract, devnet)
        if number < 0 or number > ledger.current_round():
            raise UsageError(f"round {number} does not exist (current round: {ledger.current_round()})")
        info = ledger.round(number)
        audits = attestations_by_round(ledger).get(number, [])
        disputed = disputes_by_round(ledger).get(number, [])
        names = {} if json_out else _names(ledger)
        cyclic = _cyclic(config, rpc, devnet)
        sites = [m.account for m in ledger.members()] if cyclic else []
    if json_out:
        atts, disps = [a.to_json() for a in audits], [d.to_json() for d in disputed]
        print_json({**info.to_json(), "attestations": atts, "disputes": disps})
        return
    console.print(rounds_table([info], names, cyclic=cyclic))
    if cyclic:  # the commits, in order, are the path; the drawn order shows who was skipped
        console.print(path_text(info, sites, names), highlight=False, soft_wrap=True)
    t = Table(title=f"round {number} commits")
    for col in ("site", "update hash", "samples", "epsilon", "block", "revealed", "outcome"):
        t.add_column(col)
    for c in info.commits:
        outcome = info.outcome_of(c.site)
        eps = "-" if c.epsilon is None else f"{c.epsilon:.3f}"
        shown = "-" if outcome is None else outcome.name.lower().replace("_", " ")
        revealed = "yes" if info.has_revealed(c.site) else "no"
        t.add_row(c.site, "0x" + c.update_hash.hex(), str(c.n_samples), eps, str(c.block), revealed, shown)
    console.print(t)
    console.print(f"attestations: {attestation_text(audits, names)}", highlight=False)
    console.print(f"disputes: {dispute_text(disputed, names)}", highlight=False)
    console.print(f"mode: {mode_text(info, cyclic)}")
    console.print(f"base model: 0x{info.base_hash.hex()}")
    if info.failed_leaders:
        console.print(f"failed leaders: {', '.join(info.failed_leaders)}")


@ledger_app.command()
def export(
    fmt: str = typer.Option("json", "--format", help="json or csv (one row per commit)."),
    out: Path | None = typer.Option(None, "--out", help="Write here instead of stdout."),
    config: Path | None = ConfigOpt,
    rpc: str | None = RpcOpt,
    contract: str | None = ContractOpt,
    devnet: Path = DevnetOpt,
) -> None:
    """The whole audit trail, for an ethics board's records."""
    with cli_errors():
        if fmt not in ("json", "csv"):
            raise UsageError(f"--format must be json or csv, got {fmt!r}")
        ledger = _ledger(config, rpc, contract, devnet)
        infos = ledger.rounds()
        if fmt == "json":
            doc = {
                "contract": ledger.address,
                "binding": {
                    k: ("0x" + v.hex() if isinstance(v, bytes) else v)
                    for k, v in vars(ledger.binding()).items()
                },
                "members": [m.to_json() for m in ledger.members()],
                "rounds": [i.to_json() for i in infos],
            }
            text = json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n"
        else:
            buf = io.StringIO()
            w = csv.writer(buf)
            w.writerow(
                [
                    "round",
                    "status",
                    "term",
                    "leader",
                    "site",
                    "update_hash",
                    "n_samples",
                    "block",
                    "included",
                    "merged_hash",
                    "milli_epsilon",
                    "recovered",
                    "mode",
                ]
            )
            for i in infos:
                for c in i.commits:
                    w.writerow(
                        [
                            i.round,
                            i.status.name.lower(),
                            i.term,
                            i.leader or "",
                            c.site,
                            "0x" + c.update_hash.hex(),
                            c.n_samples,
                            c.block,
                            c.site in i.included,
                            "0x" + i.merged_hash.hex() if i.merged_hash else "",
                            c.milli_epsilon,
                            c.site in i.recovered,
                            i.mode,
                        ]
                    )
            text = buf.getvalue()
        if out is None:
            typer.echo(text, nl=False)
        else:
            from swarmd.fsutil import atomic_write_text

            atomic_write_text(out, text)
            console.print(f"wrote {out}")


@ledger_app.command()
def watch(
    config: Path | None = ConfigOpt,
    rpc: str | None = RpcOpt,
    contract: str | None = ContractOpt,
    devnet: Path = DevnetOpt,
    from_block: int = typer.Option(0, min=0, help="Replay events from this block."),
    seconds: float = typer.Option(0, help="Stop after this many seconds (0: until Ctrl-C)."),
) -> None:
    """Follow ledger events live (joins, admissions, commits, elections, finalizations)."""
    with cli_errors():
        stream = _ledger(config, rpc, contract, devnet).events(from_block)
        end = time.monotonic() + seconds if seconds else None
        while end is None or time.monotonic() < end:
            for ev in stream.poll():
                args = ", ".join(
                    f"{k}={('0x' + v.hex()) if isinstance(v, bytes) else v}" for k, v in ev.args.items()
                )
                console.print(f"[dim]#{ev.block}[/] [bold]{ev.name}[/] {args}", highlight=False)
            time.sleep(0.5)


@ledger_app.command()
def verify(
    model_file: Path = typer.Argument(..., help="A .safetensors model file."),
    round_number: int | None = typer.Option(None, "--round", help="Check against this round only."),
    config: Path | None = ConfigOpt,
    rpc: str | None = RpcOpt,
    contract: str | None = ContractOpt,
    devnet: Path = DevnetOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Is this file the merged model of a round (or the initial model), by its content hash on chain? For a
    merged model, also the largest epsilon any site whose updates are in it had spent by that round."""
    from swarmd.checkpoint import load_file
    from swarmd.codec import content_hash
    from swarmd.ops.attestations import attestations_by_round, failed_audits
    from swarmd.ops.epsilon import model_epsilon

    with cli_errors():
        state = load_file(model_file)
        h, v1 = content_hash(state), content_hash(state, legacy=True)  # v1: named before protocol 4
        ledger = _ledger(config, rpc, contract, devnet)
        if round_number is not None and not 0 <= round_number <= ledger.current_round():
            raise UsageError(f"round {round_number} does not exist (current round: {ledger.current_round()})")
        last = round_number if round_number is not None else ledger.current_round()
        history = [ledger.round(r) for r in range(last + 1)]
        infos = history[-1:] if round_number is not None else history
        initial_hash = ledger.binding().initial_model_hash
        named = {initial_hash, *(i.merged_hash for i in infos)}
        h = v1 if h not in named and v1 in named else h
        matches = [i.round for i in infos if i.merged_hash == h]
        initial = initial_hash == h
        privacy = [model_epsilon(history, r) for r in matches]
        failed = failed_audits(attestations_by_round(ledger), range(max(matches) + 1) if matches else ())
    result = {
        "file": str(model_file),
        "hash": "0x" + h.hex(),
        "rounds": matches,
        "initial_model": initial,
        "verified": bool(matches) or (initial and round_number is None),
        "privacy": [p.to_json() for p in privacy],
        "failed_attestations": {str(r): auditors for r, auditors in failed.items()},
    }
    if json_out:
        print_json(result)
    elif result["verified"]:
        where = (
            f"the merged model of round {', '.join(map(str, matches))}" if matches else "the initial model"
        )
        console.print(f"[green]VERIFIED[/]: {model_file} (0x{h.hex()[:16]}..) is {where}")
        for p in privacy:
            console.print(_privacy_line(p), highlight=False)
        for r, auditors in failed.items():
            console.print(
                f"[red]FAILED ATTESTATION[/]: round {r} (in this model's history) by {', '.join(auditors)}"
            )
    else:
        scope = f"round {round_number}" if round_number is not None else "any round"
        console.print(
            f"[red]NOT VERIFIED[/]: {model_file} (0x{h.hex()[:16]}..) is not the merged model of {scope}"
        )
    if not result["verified"]:
        raise typer.Exit(1)


def _privacy_line(p) -> str:
    if p.epsilon is None:
        text = f"round {p.round}: no contributing site reported a differential-privacy epsilon"
    else:
        text = f"round {p.round}: largest epsilon spent by a contributing site: {p.epsilon:.3f} ({p.site})"
    if p.without_dp and p.epsilon is not None:
        text += f"; without DP (no guarantee): {', '.join(p.without_dp)}"
    return text


@ledger_app.command()
def privacy(
    plot_out: Path | None = typer.Option(None, "--plot", help="Also write epsilon vs round per site (PNG)."),
    config: Path | None = ConfigOpt,
    rpc: str | None = RpcOpt,
    contract: str | None = ContractOpt,
    devnet: Path = DevnetOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Each site's cumulative differential-privacy epsilon per round, as its commits recorded it on chain.
    A site that stopped committing (budget spent) keeps its last value (shown in brackets)."""
    from swarmd.ops.epsilon import epsilon_points, plot_epsilon

    with cli_errors():
        points = epsilon_points(_ledger(config, rpc, contract, devnet).rounds())
        if plot_out is not None:
            plot_epsilon(points, plot_out)
    if json_out:
        print_json([p.to_json() for p in points])
    else:
        sites = list(dict.fromkeys(p.site for p in points))
        t = Table(title="epsilon per site per round" + ("" if sites else " (no site reported one)"))
        t.add_column("round")
        for site in sites:
            t.add_column(site[:12], justify="right")
        by_round: dict[int, dict[str, str]] = {}
        for p in points:
            cell = f"{p.epsilon:.3f}" if p.committed else f"({p.epsilon:.3f})"
            by_round.setdefault(p.round, {})[p.site] = cell
        for r, cells in by_round.items():
            t.add_row(str(r), *(cells.get(s, "-") for s in sites))
        console.print(t)
    if plot_out is not None and not json_out:
        console.print(f"wrote {plot_out}")


@ledger_app.command()
def plot(
    out: Path = typer.Option(Path("ledger.png"), "--out", help="PNG to write."),
    journals: list[Path] = typer.Option(
        [], "--journal", help="Site journal.json files whose metrics to plot (default: the devnet's sites)."
    ),
    config: Path | None = ConfigOpt,
    rpc: str | None = RpcOpt,
    contract: str | None = ContractOpt,
    devnet: Path = DevnetOpt,
) -> None:
    """Plot each site's held-out metric per round, and who led each round, as a PNG."""
    from swarmd.ops.report import plot_rounds

    with cli_errors():
        ledger = _ledger(config, rpc, contract, devnet)
        names: dict[str, str] = {}
        if not journals:
            from swarmd.ops import LocalConsortium

            c = LocalConsortium.load(devnet)
            journals = [s.journal for s in c.sites]
            names = {s.address: s.name for s in c.sites}  # leaders by site name, not account
        path = plot_rounds(ledger.rounds(), ledger.members(), journals, out, names=names)
    console.print(f"wrote {path}")


def register(app: typer.Typer) -> None:
    app.add_typer(ledger_app, name="ledger")
