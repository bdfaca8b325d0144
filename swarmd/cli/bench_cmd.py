"""`swarm bench`: parses options, runs a bench of `swarmd.bench` under a progress bar, says what it wrote.

Each bench module measures, judges its goals and renders its tables and plots (`<bench>_report`);
`swarmd.bench.report.write_report` writes DIR/<name>.json and DIR/<name>.md. This module only
dispatches and shows progress.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from swarmd.bench.report import Report, Step, mark_start, write_report
from swarmd.cli.common import cli_errors, console
from swarmd.errors import UsageError

bench_app = typer.Typer(
    help="Measure chain gas, transport, training, round overhead, learning quality and attacks on real "
    "daemons; fuzz every boundary.",
    no_args_is_help=True,
)

QUICK = typer.Option(False, "--quick", help="A bounded run (under ~2 minutes on 2 cores).")
OUT = typer.Option(Path("results"), "--out", help="Folder for the JSON, Markdown and PNG files.")


def register(app: typer.Typer) -> None:
    app.add_typer(bench_app, name="bench")


# --- progress and output ----------------------------------------------------------------------------
@contextmanager
def _progress() -> Iterator[Progress]:
    mark_start()  # every bench enters here first
    cols = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    with Progress(*cols, console=console, transient=False) as progress:
        yield progress


def _steps(label: str, steps: Sequence[Step]) -> list[Any]:
    """Run `steps` in order under one progress bar; returns their results."""
    results = []
    with _progress() as progress:
        task = progress.add_task(label, total=len(steps))
        for desc, fn in steps:
            progress.update(task, description=f"{label}: {desc}")
            results.append(fn())
            progress.advance(task)
        progress.update(task, description=f"{label}: done")
    return results


def _write(out: Path, report: Report, *, quick: bool, started: float) -> dict[str, Any]:
    """Write `report` into `out` and say so; returns the JSON document."""
    name = report.name
    command = "swarm bench " + " ".join(
        sys.argv[sys.argv.index("bench") + 1 :] if "bench" in sys.argv else [name]
    )
    doc = write_report(out, report, command=command, quick=quick, seconds=time.perf_counter() - started)
    missed = [g["goal"] for g in report.goals if not g["met"]]
    console.print(f"[bold]{name}[/]: wrote {out / (name + '.json')}, {name}.md, {len(report.plots)} plot(s)")
    if missed:
        console.print(f"[yellow]goals missed:[/] {'; '.join(missed)}")
    return doc


# --- chain ------------------------------------------------------------------------------------------
@bench_app.command("chain")
def chain_cmd(
    quick: bool = QUICK,
    out: Path = OUT,
    members: int = typer.Option(8, "--members", help="The larger consortium size (3 is always run)."),
) -> None:
    """Gas and latency of every SwarmLedger call on a fresh devnet."""
    with cli_errors():
        run_chain(out, quick, members)


def run_chain(out: Path, quick: bool, members: int = 8) -> dict[str, Any]:
    from swarmd.bench.chain import chain_report, chain_steps

    t0 = time.perf_counter()
    (result,) = _steps("chain", chain_steps(members, quick))
    return _write(out, chain_report(result, out), quick=quick, started=t0)


# --- transport --------------------------------------------------------------------------------------
@bench_app.command("transport")
def transport_cmd(
    quick: bool = QUICK,
    out: Path = OUT,
    relay_links: str = typer.Option(
        "100mbit,1gbit",
        "--relay-links",
        help="Link rates for the relayed transfer between network namespaces (needs root; '' for none).",
    ),
) -> None:
    """Codec and encrypted transfer throughput as ratios to memcpy and plain ZeroMQ, and the relayed
    (libp2p) transfer against direct ZeroMQ."""
    from swarmd.ops.netns import parse_rate

    with cli_errors():
        rates = tuple(parse_rate(r) for r in relay_links.split(",") if r.strip())
        run_transport(out, quick, rates)


def run_transport(out: Path, quick: bool, relay_links: tuple[int, ...] | None = None) -> dict[str, Any]:
    from swarmd.bench.transport import RELAY_LINKS, transport_steps
    from swarmd.bench.transport_report import transport_report

    t0 = time.perf_counter()
    links = RELAY_LINKS if relay_links is None else relay_links
    parts = _steps("transport", transport_steps(quick, links))
    return _write(out, transport_report(parts, out), quick=quick, started=t0)


# --- train ------------------------------------------------------------------------------------------
@bench_app.command("train")
def train_cmd(
    quick: bool = QUICK,
    out: Path = OUT,
    threads: int = typer.Option(0, "--threads", help="torch threads (0: the library default)."),
) -> None:
    """Local training throughput of the example bundles (CPU, and CUDA when present)."""
    with cli_errors():
        run_train(out, quick, threads)


def run_train(out: Path, quick: bool, threads: int = 0) -> dict[str, Any]:
    from swarmd.bench.train import train_report, train_steps

    t0 = time.perf_counter()
    (result,) = _steps("train", train_steps(quick, threads))
    return _write(out, train_report(result), quick=quick, started=t0)


# --- learning ---------------------------------------------------------------------------------------
@bench_app.command("learning")
def learning_cmd(
    quick: bool = QUICK,
    out: Path = OUT,
    seeds: int = typer.Option(3, "--seeds", help="Seeds per case (full run)."),
    rounds: int = typer.Option(0, "--rounds", help="0: the task's default (5; hard: 8)."),
    local_steps: int = typer.Option(0, "--local-steps", help="0: the task's default (10; hard: 8)."),
    sites: int = typer.Option(3, "--sites", help="Sites of the quick tasks (hard: always 5)."),
    task: str = typer.Option("", "--task", help="Only this task kind (classification|segmentation|hard)."),
    arms: str = typer.Option("", "--arms", help="--task hard: comma-separated arms (default: all)."),
    alphas: str = typer.Option("0.1,1.0", "--alphas", help="--task hard: comma-separated Dirichlet alphas."),
    poison: bool = typer.Option(True, "--poison/--no-poison", help="--task hard: the poisoning runs."),
) -> None:
    """Swarm vs centralized vs local-only on generated non-IID sites (Dirichlet alpha 0.1 and 1.0);
    `--task hard`: every method of issue 16 on the hard task (rounds 8, local steps 8, 5 sites)."""
    with cli_errors():
        hard = hard_options(arms, alphas, poison) if task == "hard" else None
        rounds = rounds or (8 if hard else 5)
        local_steps = local_steps or (8 if hard else 10)
        kw = {"seeds": seeds, "rounds": rounds, "local_steps": local_steps, "sites": sites, "task": task}
        run_learning(out, quick, hard=hard, **kw)  # type: ignore[arg-type]


def hard_options(arms: str, alphas: str, poison: bool) -> dict[str, Any]:
    from swarmd.bench.learning_hard import ARMS

    try:
        alpha_list = tuple(float(a) for a in alphas.split(",") if a.strip())
    except ValueError:
        raise UsageError(f"--alphas must be comma-separated numbers, got {alphas!r}") from None
    arm_list = tuple(a.strip() for a in arms.split(",") if a.strip()) or ARMS
    return {"arms": arm_list, "alphas": alpha_list, "poison": poison}


def run_learning(
    out: Path,
    quick: bool,
    *,
    seeds: int = 3,
    rounds: int = 5,
    local_steps: int = 10,
    sites: int = 3,
    task: str = "",
    hard: dict[str, Any] | None = None,
) -> dict[str, Any]:
    from swarmd.bench.learning import learning_report, learning_steps

    t0 = time.perf_counter()
    kw = {"seeds": seeds, "rounds": rounds, "local_steps": local_steps, "sites": sites, "task": task}
    steps = learning_steps(quick, hard=hard, **kw)  # type: ignore[arg-type]
    runs = _steps("learning", steps)
    return _write(out, learning_report(runs, out, quick), quick=quick, started=t0)


# --- compression ------------------------------------------------------------------------------------
@bench_app.command("compression")
def compression_cmd(
    quick: bool = QUICK,
    out: Path = OUT,
    seeds: int = typer.Option(3, "--seeds"),
    rounds: int = typer.Option(5, "--rounds"),
    local_steps: int = typer.Option(10, "--local-steps"),
    sites: int = typer.Option(3, "--sites"),
    alpha: float = typer.Option(1.0, "--alpha", help="Dirichlet alpha of the sites' class mix."),
    task: str = typer.Option("classification", "--task", help="classification|segmentation"),
    topk_ratio: float = typer.Option(0.01, "--topk-ratio", help="Share of each tensor top-k sends."),
) -> None:
    """What each [exchange] compression saves in bytes per round and costs in the swarm's final metric."""
    with cli_errors():
        from swarmd.bench.compression import compression_report, compression_steps, load_average

        t0, load = time.perf_counter(), load_average()
        steps = compression_steps(
            quick, seeds=seeds, rounds=rounds, local_steps=local_steps, sites=sites, alpha=alpha,
            task=task, topk_ratio=topk_ratio,
        )  # fmt: skip
        runs = _steps("compression", steps)
        _write(out, compression_report(runs, quick, load), quick=quick, started=t0)


# --- privacy ----------------------------------------------------------------------------------------
@bench_app.command("privacy")
def privacy_cmd(
    quick: bool = QUICK,
    out: Path = OUT,
    seeds: int = typer.Option(3, "--seeds", help="Seeds per task kind (full run)."),
    rounds: int = typer.Option(5, "--rounds"),
    local_steps: int = typer.Option(10, "--local-steps"),
    alpha: float = typer.Option(1.0, "--alpha", help="Dirichlet alpha of the sites' class mix."),
    epsilons: str = typer.Option("1,3,8", "--epsilons", help="Comma-separated target epsilons (DP-SGD)."),
    task: str = typer.Option("", "--task", help="Only this task kind (classification|segmentation)."),
    timing: bool = typer.Option(True, "--timing/--no-timing", help="Also time DP-SGD vs plain steps."),
) -> None:
    """What privacy costs: learning at several epsilons and with secure aggregation; DP-SGD step time."""
    with cli_errors():
        try:
            eps = tuple(float(e) for e in epsilons.split(",") if e.strip())
        except ValueError:
            raise typer.BadParameter(f"expected comma-separated numbers, got {epsilons!r}") from None
        run_privacy(
            out,
            quick,
            seeds=seeds,
            rounds=rounds,
            local_steps=local_steps,
            alpha=alpha,
            epsilons=eps,
            task=task,
            timing=timing,
        )


def run_privacy(out: Path, quick: bool, **kw: Any) -> dict[str, Any]:
    from swarmd.bench.privacy import privacy_report, privacy_steps

    t0 = time.perf_counter()
    results = _steps("privacy", privacy_steps(quick, log=out / "privacy_runs.jsonl", **kw))
    return _write(out, privacy_report(results, out, quick), quick=quick, started=t0)


# --- round ------------------------------------------------------------------------------------------
@bench_app.command("round")
def round_cmd(
    quick: bool = QUICK,
    out: Path = OUT,
    sizes: str = typer.Option("3,5,8", "--sizes", help="Comma-separated site counts."),
    rounds: int = typer.Option(4, "--rounds", help="Rounds per size (the first is a warm-up)."),
    block_time: float | None = typer.Option(
        None, "--block-time", help="anvil block time (default: instant)."
    ),
    models: str = typer.Option(
        "densenet121", "--models", help="Comma-separated: densenet121 (~7M), densenet264 (~30.6M)."
    ),
) -> None:
    """Round time and overhead of real daemons on a local anvil, and the leader's memory."""
    with cli_errors():
        run_round(
            out,
            quick,
            sizes=_ints(sizes),
            rounds=rounds,
            block_time=block_time,
            models=tuple(m.strip() for m in models.split(",") if m.strip()),
        )


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers, got {text!r}") from None


def run_round(
    out: Path,
    quick: bool,
    *,
    sizes: tuple[int, ...] = (3, 5, 8),
    rounds: int = 4,
    block_time: float | None = None,
    models: tuple[str, ...] = ("densenet121",),
) -> dict[str, Any]:
    from swarmd.bench.round import MODELS, run_round_bench
    from swarmd.bench.round_report import round_name, round_report

    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise typer.BadParameter(f"unknown model(s) {unknown}; known: {sorted(MODELS)}")
    name = round_name(block_time, models)
    t0 = time.perf_counter()
    with _progress() as progress:
        task = progress.add_task("round", total=None)
        result = run_round_bench(
            sizes,
            quick=quick,
            rounds=rounds,
            block_time=block_time,
            models=models,
            on_step=lambda msg: progress.update(task, description=f"round: {msg}"),
            keep_logs=out / f"{name}-logs",
        )
        progress.update(task, description="round: done", total=1, completed=1)
    return _write(out, round_report(result, out, name), quick=quick, started=t0)


# --- wan --------------------------------------------------------------------------------------------
@bench_app.command("wan")
def wan_cmd(
    out: Path = OUT,
    sites: int = typer.Option(3, "--sites", help="Sites, each in its own network namespace."),
    rate: str = typer.Option("100mbit", "--rate", help="Each site's link rate, both ways (tc units: 1gbit)."),
    rounds: int = typer.Option(2, "--rounds", help="Rounds (the first includes start-up)."),
    model: str = typer.Option("densenet121", "--model", help="densenet121 (~7M) or densenet264 (~30.6M)."),
    compression: str = typer.Option("none", "--compression", help="[exchange] compression (sends diffs)."),
    topology: str = typer.Option(
        "leader", "--topology", help="leader, or sharded (run after the leader topology, in the same run)."
    ),
    tcp: str = typer.Option(
        "cubic",
        "--tcp",
        help="TCP congestion control in the namespaces: cubic (reno where the host allows no cubic there), "
        "reno, bbr, ..., or host (the host's default).",
    ),
    leaves: int = typer.Option(
        32, "--leaves", help="[exchange] leaves of the sharded topology's task (1-256).", min=1, max=256
    ),
) -> None:
    """Rounds over shaped links: sites and chain in network namespaces (needs root), against the floor."""
    from swarmd.bench.round import MODELS
    from swarmd.bench.wan import run_wan_bench
    from swarmd.bench.wan_report import wan_report, with_baseline

    if model not in MODELS or sites < 2 or rounds < 1 or topology not in ("leader", "sharded"):
        raise typer.BadParameter(
            f"need --sites >= 2, --rounds >= 1, --model in {sorted(MODELS)} and --topology leader or sharded"
        )
    if not tcp.isidentifier():
        raise typer.BadParameter(f"--tcp {tcp!r} is not the name of a TCP congestion control")
    if topology == "sharded" and compression != "none":
        raise typer.BadParameter(
            "--topology sharded does not compose with --compression yet: give one of them"
        )
    with cli_errors(), _progress() as progress:
        t0 = time.perf_counter()
        task = progress.add_task("wan", total=None)
        results = [
            run_wan_bench(
                sites,
                rate,
                rounds=rounds,
                model=model,
                topology=t,
                on_step=lambda msg: progress.update(task, description=f"wan: {msg}"),
                keep_logs=out / "wan-logs",
                compression=compression,
                tcp=tcp,
                leaves=leaves,
            )
            for t in dict.fromkeys(
                ("leader", topology)
            )  # sharded: the leader topology first, as its baseline
        ]
        progress.update(task, description="wan: done", total=1, completed=1)
        _write(out, wan_report(with_baseline(results)), quick=False, started=t0)


# --- secagg -----------------------------------------------------------------------------------------
@bench_app.command("secagg")
def secagg_cmd(
    quick: bool = QUICK,
    out: Path = OUT,
    sizes: str = typer.Option("3,5,8", "--sizes", help="Comma-separated site counts."),
    rounds: int = typer.Option(4, "--rounds", help="Rounds per run (the first is a warm-up)."),
    repeats: int = typer.Option(2, "--repeats", help="Runs of each mode per N, in ABBA order."),
    dropout: bool = typer.Option(True, "--dropout/--no-dropout", help="The N=8 run with 2 sites killed."),
) -> None:
    """Secure aggregation against plain rounds: bytes on the wire, overhead, leader memory, dropouts."""
    with cli_errors():
        run_secagg(out, quick, sizes=_ints(sizes), rounds=rounds, repeats=repeats, dropout=dropout)


def run_secagg(
    out: Path,
    quick: bool,
    *,
    sizes: tuple[int, ...] = (3, 5, 8),
    rounds: int = 4,
    repeats: int = 2,
    dropout: bool = True,
) -> dict[str, Any]:
    from swarmd.bench.secagg import run_secagg_bench
    from swarmd.bench.secagg_report import secagg_report

    if rounds < 2 or repeats < 1:
        raise typer.BadParameter("need --rounds >= 2 (the first is a warm-up) and --repeats >= 1")
    t0 = time.perf_counter()
    with _progress() as progress:
        task = progress.add_task("secagg", total=None)
        result = run_secagg_bench(
            sizes,
            quick=quick,
            rounds=rounds,
            repeats=repeats,
            dropout=(8, 2) if dropout else None,
            on_step=lambda msg: progress.update(task, description=f"secagg: {msg}"),
            keep_logs=out / "secagg-logs",
        )
        progress.update(task, description="secagg: done", total=1, completed=1)
    return _write(out, secagg_report(result, out), quick=quick, started=t0)


# --- fuzz -------------------------------------------------------------------------------------------
@bench_app.command("fuzz")
def fuzz_cmd(
    quick: bool = QUICK,
    out: Path = OUT,
    cases: int = typer.Option(0, "--cases", help="Cases per target (default 10,000; --quick: 300)."),
    target: list[str] = typer.Option([], "--target", help="Only this target (repeatable)."),
) -> None:
    """Hypothesis inputs at every boundary (frames, configs, datalists, checkpoints); exits 1 on a finding."""
    with cli_errors():
        doc = run_fuzz(out, quick, cases=cases, targets=tuple(target))
    if doc["result"]["findings"]:
        raise typer.Exit(1)


def run_fuzz(out: Path, quick: bool, *, cases: int = 0, targets: tuple[str, ...] = ()) -> dict[str, Any]:
    from swarmd.bench.fuzz import FULL_CASES, QUICK_CASES, fuzz_report, fuzz_steps
    from swarmd.bench.fuzz_targets import TARGETS

    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        raise typer.BadParameter(f"unknown target(s) {unknown}; known: {list(TARGETS)}")
    n = cases or (QUICK_CASES if quick else FULL_CASES)
    t0 = time.perf_counter()
    results = _steps("fuzz", fuzz_steps(n, targets or TARGETS))
    return _write(out, fuzz_report(results, n), quick=quick, started=t0)


# --- attack -----------------------------------------------------------------------------------------
@bench_app.command("attack")
def attack_cmd(
    quick: bool = QUICK,
    out: Path = OUT,
    rounds: int = typer.Option(4, "--rounds", help="Clean rounds, and as many flooded ones (--quick: 2)."),
) -> None:
    """A member's flood of the leader during rounds, a stranger's 16 MiB frames to every port."""
    with cli_errors():
        run_attack(out, quick, rounds=rounds)


def run_attack(out: Path, quick: bool, *, rounds: int = 4) -> dict[str, Any]:
    from swarmd.bench.attack import attack_report, run_attack_bench

    if rounds < 1:
        raise typer.BadParameter(f"--rounds must be at least 1, got {rounds}")
    t0 = time.perf_counter()
    with _progress() as progress:
        task = progress.add_task("attack", total=None)
        result = run_attack_bench(
            quick,
            rounds_each=rounds,
            on_step=lambda msg: progress.update(task, description=f"attack: {msg}"),
            keep_logs=out / "attack-logs",
        )
        progress.update(task, description="attack: done", total=1, completed=1)
    return _write(out, attack_report(result), quick=quick, started=t0)


# --- all --------------------------------------------------------------------------------------------
@bench_app.command("all")
def all_cmd(quick: bool = QUICK, out: Path = OUT) -> None:
    """Every bench in sequence: chain, transport, train, round, learning, fuzz."""
    with cli_errors():
        docs = [
            run_chain(out, quick),
            run_transport(out, quick),
            run_train(out, quick),
            run_round(out, quick),
            run_learning(out, quick),
            run_fuzz(out, quick),
        ]
        missed = [f"{d['bench']}: {g['goal']}" for d in docs for g in d["goals"] if not g["met"]]
        total = sum(d["seconds"] for d in docs)
        console.print(f"[bold]all benches done[/] in {total:.0f} s; {len(missed)} goal(s) missed")
        for line in missed:
            console.print(f"  [yellow]missed[/] {line}")
