"""`swarm devnet up | down | run | fund`: a whole consortium on this machine, on a local anvil chain,
training an example task on generated data or your own task on your own datalists; or the chain alone."""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from swarmd.cli.common import cli_errors, console, err_console, print_json
from swarmd.scores import Scores, fmt_score

if TYPE_CHECKING:
    from swarmd.ledger import Ledger, RoundInfo
    from swarmd.ops import DemoData, LocalConsortium, LocalSwarm, OwnData
    from swarmd.ops.report import SiteOutcome

devnet_app = typer.Typer(help="A local anvil chain with N provisioned sites.", no_args_is_help=True)

DirOpt = typer.Option(Path(".devnet"), "--dir", help="Devnet directory (chain, sites, data).")


def default_task() -> Path:
    from swarmd.train import example_task_file

    return example_task_file("cxr_densenet")


TaskOpt = typer.Option(
    None,
    "--task",
    help="classification, segmentation or signal (a shipped example task with generated data), "
    "or a swarm.toml (default: classification).",
)
DataOpt = typer.Option(
    None,
    "--data",
    metavar="SITE=DATALIST",
    help="A site and its Decathlon datalist; once per site (the sites are the --data given). "
    "Without it, every site gets generated data.",
)
TestDataOpt = typer.Option(
    None, "--test-data", help="With --data: a held-out datalist ('validation' section) every site scores on."
)
DataKindOpt = typer.Option(
    None,
    "--data-kind",
    help="Generated data for a swarm.toml without --data: classification, segmentation or signal.",
)
PerSiteOpt = typer.Option(None, "--n-per-site", min=2, help="Generated images per site.")
NTestOpt = typer.Option(None, "--n-test", min=2, help="Generated images in the shared test set.")
RoundsOpt = typer.Option(None, "--rounds", min=1, help="Override the task's [swarm] rounds.")
StepsOpt = typer.Option(None, "--local-steps", min=1, help="Override the task's [swarm] local_steps.")


@dataclass(frozen=True)
class DataChoice:
    """`up` and `run`'s task and data options, as given."""

    task: str | None
    data: list[str] | None
    test_data: Path | None
    data_kind: str | None
    n_per_site: int | None
    n_test: int | None
    rounds: int | None
    local_steps: int | None


def _plan(
    root: Path, sites: int | None, choice: DataChoice, alpha: float, seed: int, privacy: dict[str, Any]
) -> tuple[Path, DemoData | OwnData]:
    """The task file and data of a new devnet (a derived task when settings are overridden); for a
    devnet already provisioned in `root`, its own (the options then have nothing to say)."""
    from swarmd.errors import DevnetError
    from swarmd.ops import DemoData, derived_task, devnet_data, recorded_devnet

    if not (root / "consortium.json").exists() and recorded_devnet(root.resolve()) is not None:
        raise DevnetError(
            f"{root.resolve()} holds a chain-only devnet, which is up",
            hint="`swarm devnet down` it first, or use another --dir",
        )
    if (root / "consortium.json").exists():
        if any(v is not None for v in vars(choice).values()):
            console.print(f"[dim]{root} holds a provisioned devnet: its own task and data are used[/]")
        return default_task(), DemoData()  # unused: local_swarm takes the recorded consortium
    task, data = devnet_data(
        choice.task,
        data=choice.data or (),
        test_data=choice.test_data,
        data_kind=choice.data_kind,
        sites=sites,
        alpha=alpha,
        seed=seed,
        n_per_site=choice.n_per_site,
        n_test=choice.n_test,
    )
    swarm = {k: v for k, v in (("rounds", choice.rounds), ("local_steps", choice.local_steps)) if v}
    if swarm or privacy:
        out = root.resolve() / "task" / "swarm.toml"
        task = derived_task(task, out, swarm=swarm, privacy=privacy or None)
    return task, data


def _swarm(
    root: Path,
    task: Path,
    block_time: float | None,
    data: DemoData | OwnData,
    sites: int | None,
    *,
    start: bool,
    keep: bool,
    private_sites: int = 0,
) -> contextlib.AbstractContextManager[LocalSwarm]:
    """A local swarm recorded in `root`, so `swarm devnet down` and `swarm ledger --devnet` find it."""
    from swarmd.ops import local_swarm

    return local_swarm(
        root,
        task,
        sites=sites or 3,
        block_time=block_time or None,
        data=data,
        start=start,
        keep=keep,
        record=True,
        private_sites=private_sites,
        fork=True,  # the daemons are forked from one process that imported their libraries (not with keep)
    )


@devnet_app.command()
def up(
    root: Path = DirOpt,
    sites: int | None = typer.Option(
        None, min=0, max=16, help="Number of sites with generated data (default 3); 0: just the chain."
    ),
    task: str | None = TaskOpt,
    data: list[str] | None = DataOpt,
    test_data: Path | None = TestDataOpt,
    data_kind: str | None = DataKindOpt,
    n_per_site: int | None = PerSiteOpt,
    n_test: int | None = NTestOpt,
    rounds: int | None = RoundsOpt,
    local_steps: int | None = StepsOpt,
    block_time: float | None = typer.Option(1.0, help="Seconds per block (0: instant mining)."),
    alpha: float = typer.Option(0.5, help="Dirichlet label skew of the generated data (small = skewed)."),
    seed: int = typer.Option(0),
) -> None:
    """Start anvil in the background, deploy the task, provision, join and admit the sites; or, when DIR
    holds a devnet that is down (stopped or crashed), start its saved chain again. `--sites 0`: anvil
    alone, for a consortium set up by hand (`swarm deploy`, `swarm join`) and `swarm devnet fund`."""
    from swarmd.errors import DevnetError
    from swarmd.ops import OwnData, recorded_devnet

    choice = DataChoice(task, data, test_data, data_kind, n_per_site, n_test, rounds, local_steps)
    with cli_errors():
        if sites == 0:
            _chain_only(root, block_time, choice)
            return
        if recorded_devnet(root.resolve()) is not None:
            raise DevnetError(f"a devnet is already up in {root.resolve()}", hint="`swarm devnet down` first")
        path, demo = _plan(root, sites, choice, alpha, seed, {})
        n = demo.sites if isinstance(demo, OwnData) else sites or 3
        with (
            console.status(f"deploying the task and provisioning {n} sites..."),
            _swarm(root, path, block_time, demo, sites, start=False, keep=True) as swarm,
        ):
            dev, c = swarm.devnet, swarm.consortium
    console.print(f"devnet up at {dev.rpc_url} (pid {dev.pid}); SwarmLedger at {c.contract}")
    for s in c.sites:
        console.print(f"  {s.name}: {s.address}  config {s.config}  data {s.data_list}")
    console.print(f"run a site: swarmd run --config {c.sites[0].config}")
    console.print(f"read the ledger: swarm ledger members --devnet {root}")


def _chain_only(root: Path, block_time: float | None, choice: DataChoice) -> None:
    from eth_account import Account

    from swarmd.errors import UsageError
    from swarmd.ledger import find_anvil
    from swarmd.ops.chain import local_chain

    if any(v is not None for v in vars(choice).values()):
        raise UsageError("--sites 0 runs just the chain: it takes no task or data options")
    dev = local_chain(root, block_time=block_time or None)
    console.print(
        f"chain up: RPC {dev.rpc_url}, chain id {dev.chain_id}, anvil pid {dev.pid} ({find_anvil()})"
    )
    console.print(f"funded dev accounts (anvil's public test keys, in {root / 'devnet.json'}):")
    for i, key in enumerate(dev.dev_keys):
        console.print(f"  {i}: {Account.from_key(key).address}")
    console.print(f"fund another account: swarm devnet fund ACCOUNT --eth 10 --dir {root}")
    console.print(f"stop it: swarm devnet down --dir {root} (the chain is saved in {root})")


@devnet_app.command()
def fund(
    account: str = typer.Argument(..., help="The account (0x address) to send ether to."),
    eth: str = typer.Option("10", "--eth", help="How much ether to send."),
    root: Path = DirOpt,
) -> None:
    """Send ether to ACCOUNT from a funded dev account of the devnet in DIR (a mined transaction)."""
    from swarmd.ops.chain import fund_account, parse_ether

    with cli_errors():
        done = fund_account(root, account, parse_ether(eth))
    console.print(
        f"sent {eth} ETH to {done.to} from {done.sender} (tx {done.tx_hash}); "
        f"balance now {done.balance_wei / 10**18:g} ETH"
    )


@devnet_app.command()
def down(root: Path = DirOpt) -> None:
    """Stop the devnet's daemons and anvil. Data and site state stay on disk."""
    from swarmd.ledger import Devnet

    with cli_errors():
        _stop_recorded_daemons(root)
        dev = Devnet.load(root / "devnet.json")
        dev.stop()
    console.print(f"devnet in {root} stopped")


def _stop_recorded_daemons(root: Path) -> None:
    import os
    import signal

    path = root / "daemons.json"
    if not path.exists():
        return
    for pid in json.loads(path.read_text()).get("pids", []):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(int(pid), signal.SIGTERM)
    path.unlink()


def _site_label(st: dict[str, Any], account: str | None) -> str:
    """A site's name as the daemon knows it from the chain (itself included), else the account's prefix."""
    if not account:
        return "-"
    names = {**st.get("peer_names", {}), st.get("address", ""): st.get("site", "")}
    return escape(names.get(account) or account[:10])


def progress_table(statuses: list[tuple[str, dict[str, Any] | None]], rounds_total: int) -> Table:
    t = Table(title=f"swarm progress ({rounds_total} rounds)")
    for col in ("site", "round", "phase", "leader", "samples", "loss", "merged", "held-out metric"):
        t.add_column(col)
    for name, st in statuses:
        if st is None:
            t.add_row(name, "-", "[dim]starting[/]", "", "", "", "", "")
            continue
        metric = ", ".join(f"{k}={fmt_score(v)}" for k, v in st["metrics"].items())
        base = ", ".join(fmt_score(v) for v in st["baseline"].values())
        t.add_row(
            name,
            str(st["round"]),
            st["phase"],
            _site_label(st, st["leader"]),
            str(st["n_samples"]),
            "-" if st["last_loss"] is None else f"{st['last_loss']:.3f}",
            str(st["last_merged_round"]),
            f"{metric or '-'} (initial {base or '-'})",
        )
    return t


@devnet_app.command()
def run(
    root: Path = DirOpt,
    sites: int | None = typer.Option(None, min=1, max=16, help="Number of sites with generated data (3)."),
    task: str | None = TaskOpt,
    data: list[str] | None = DataOpt,
    test_data: Path | None = TestDataOpt,
    data_kind: str | None = DataKindOpt,
    n_per_site: int | None = PerSiteOpt,
    n_test: int | None = NTestOpt,
    rounds: int | None = RoundsOpt,
    local_steps: int | None = StepsOpt,
    block_time: float | None = typer.Option(1.0, help="Seconds per block (0: instant mining)."),
    alpha: float = typer.Option(0.3, help="Dirichlet label skew of the generated data."),
    seed: int = typer.Option(0),
    timeout: float = typer.Option(900, help="Give up after this many seconds."),
    local_baseline: bool = typer.Option(True, help="Also train each site alone, for comparison."),
    keep: bool = typer.Option(False, help="Leave the chain and daemons running at the end."),
    secure_aggregation: bool = typer.Option(
        False, "--secure-aggregation", help="Mask every update: the leader learns only the sum."
    ),
    dp_epsilon: float = typer.Option(
        0.0, "--dp-epsilon", min=0.0, help="Train with DP-SGD to this epsilon over the run (0: no DP)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Progress on stderr; the summary as JSON on stdout."),
    private_sites: int = typer.Option(
        0,
        "--private-sites",
        min=0,
        help="The last N sites accept no connection: reached via a relay on site 0.",
    ),
) -> None:
    """Start a devnet (if none is up) and its daemons; show live progress until every round is done."""
    from swarmd.task import load_task

    choice = DataChoice(task, data, test_data, data_kind, n_per_site, n_test, rounds, local_steps)
    with cli_errors(), contextlib.ExitStack() as stack:
        path, demo = _plan(root, sites, choice, alpha, seed, _privacy(secure_aggregation, dp_epsilon))
        with console.status("provisioning the sites (unless a devnet is up) and starting them..."):
            swarm = stack.enter_context(
                _swarm(
                    root, path, block_time, demo, sites, start=True, keep=keep, private_sites=private_sites
                )
            )
        rounds_total = load_task(swarm.consortium.task).swarm.rounds
        try:
            _follow(swarm, rounds_total, timeout, err_console if json_out else console)
        except BaseException:
            if keep:  # --keep keeps a swarm that ran, not the daemons of one that failed
                swarm.stop()
            raise
        print_summary(swarm.consortium, local_baseline=local_baseline, json_out=json_out)


def _privacy(secure_aggregation: bool, dp_epsilon: float) -> dict[str, Any]:
    """The [privacy] table for the demo's privacy flags (empty: the task's own)."""
    privacy: dict[str, Any] = {}
    if secure_aggregation:
        privacy["secure_aggregation"] = True
    if dp_epsilon > 0:
        privacy.update(mechanism="sample", target_epsilon=dp_epsilon, delta=1e-5, epsilon_budget=dp_epsilon)
    return privacy


def _follow(swarm: LocalSwarm, rounds_total: int, timeout: float, out: Console) -> None:
    """Live progress until every site is done; DaemonError when a daemon exits or on `timeout`."""
    names = [d.name for d in swarm.daemons]
    try:
        with Live(progress_table([], rounds_total), console=out, refresh_per_second=2) as live:
            swarm.wait_done(
                timeout,
                interval=1.0,
                on_poll=lambda sts: live.update(
                    progress_table(list(zip(names, sts, strict=True)), rounds_total)
                ),
            )
    finally:
        if not out.is_terminal:  # rich's Live leaves its last frame without a newline in a log
            out.line()


def _fmt(metrics: Scores) -> str:
    return ", ".join(f"{k} {fmt_score(v)}" for k, v in metrics.items()) or "-"


def _spent_epsilon(rounds: list[RoundInfo], sites: list[str]) -> list[str]:
    """Each site's epsilon on chain after its last commit ("-": it keeps no privacy account)."""
    from swarmd.ops.epsilon import epsilon_points

    last = {p.site.lower(): p.epsilon for p in epsilon_points(rounds)}
    return [f"{last[a.lower()]:.2f}" if a.lower() in last else "-" for a in sites]


def print_summary(consortium: LocalConsortium, *, local_baseline: bool, json_out: bool = False) -> None:
    """The ledger's rounds, then each site's held-out score: initial, after the swarm, alone (as JSON on
    stdout with `json_out`)."""
    from swarmd.cli.audit_cmd import audit_consortium, audit_summary
    from swarmd.cli.rounds_view import rounds_summary, rounds_table
    from swarmd.ledger import Ledger
    from swarmd.ops.report import site_outcomes
    from swarmd.task import load_task

    ledger = Ledger(consortium.rpc_url, consortium.contract)
    rounds = ledger.rounds()
    settings = load_task(consortium.task).swarm
    numbering = rounds_summary(rounds, settings.rounds)
    audit = audit_consortium(consortium)
    if not json_out:
        console.print(rounds_table(rounds, {a.lower(): n for a, n in ledger.site_names().items()}))
        console.print(numbering, highlight=False)
        console.print(audit_summary(audit, consortium.sites[0].name), highlight=False)
    if local_baseline:
        (err_console if json_out else console).print("training each site alone for comparison...")
    outcomes = site_outcomes(consortium, local_baseline=local_baseline, workdir=consortium.root / "baselines")
    spent = _spent_epsilon(rounds, [s.address for s in consortium.sites])
    if json_out:
        png = _plot(consortium, ledger, rounds, outcomes)
        sites = [{**asdict(o), "epsilon_spent": eps} for o, eps in zip(outcomes, spent, strict=True)]
        print_json(
            {
                "rounds": [i.to_json() for i in rounds],
                "numbering": numbering,
                "audit": [v.to_json() for v in audit],
                "sites": sites,
                "plot": png,
            }
        )
        return
    t = Table(title="held-out test set (never trained on)")
    for col in (
        "site",
        "train labels (neg/pos)",
        "initial model",
        "swarm model",
        *(["personalised"] if settings.personalise_steps else []),  # the swarm model fine-tuned at the site
        "epsilon spent",
        "site alone",
    ):
        t.add_column(col)
    for o, eps in zip(outcomes, spent, strict=True):
        mine = [_fmt(o.personalised)] if settings.personalise_steps else []
        t.add_row(
            o.name, o.labels, _fmt(o.initial), f"[bold]{_fmt(o.swarm)}[/]", *mine, eps, _fmt(o.local_only)
        )
    console.print(t)
    console.print(f"plot: {_plot(consortium, ledger, rounds, outcomes)}")


def _plot(
    consortium: LocalConsortium, ledger: Ledger, rounds: list[RoundInfo], outcomes: list[SiteOutcome]
) -> Path:
    """The demo's plot: the swarm's and each site's local-only curves, leaders by site name."""
    from swarmd.ops.report import plot_rounds

    names = {s.address: s.name for s in consortium.sites}
    alone = {o.name: o.alone_curve for o in outcomes if o.alone_curve}
    journals = [s.journal for s in consortium.sites]
    return plot_rounds(
        rounds, ledger.members(), journals, consortium.root / "swarm.png", names=names, alone=alone
    )


def register(app: typer.Typer) -> None:
    app.add_typer(devnet_app, name="devnet")
