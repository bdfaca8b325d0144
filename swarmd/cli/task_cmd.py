"""`swarm task check`: does a task's bundle read this site's data, train a step and evaluate?"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import typer
from rich.markup import escape

from swarmd.cli.common import cli_errors, console, err_console, print_json
from swarmd.scores import fmt_score

task_app = typer.Typer(
    help="Check a task (swarm.toml and its bundle) against a site's data.", no_args_is_help=True
)


@task_app.command()
def check(
    task: Path = typer.Option(..., "--task", help="The task's swarm.toml."),
    data_list: Path = typer.Option(
        ..., "--data-list", help="The site's Decathlon datalist (its 'training' section)."
    ),
    eval_list: Path | None = typer.Option(
        None, "--eval-list", help="A datalist to evaluate on ('validation' section); default: the site's own."
    ),
    steps: int = typer.Option(1, "--steps", min=1, help="Training iterations to run."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or auto."),
    threads: int = typer.Option(0, "--threads", min=0, help="CPU threads for torch (0: all cores)."),
    as_json: bool = typer.Option(False, "--json", help="Print the findings as JSON."),
) -> None:
    """Load the bundle as the daemon will, check it reads the site's data (by name and by count),
    train a step and evaluate once; print what it found. Exit 0 only if all of it works."""
    import logging

    from swarmd.task import load_task
    from swarmd.train import check_task

    # The findings' warnings are printed below; the daemon's logger would print them a second time.
    logging.getLogger("swarmd.train.contract").setLevel(logging.ERROR)
    with cli_errors():
        report = check_task(
            load_task(task), data_list, eval_list=eval_list, steps=steps, device=device, threads=threads
        )
    if as_json:
        print_json(asdict(report))
        return
    metrics = ", ".join(f"{k} = {fmt_score(v)}" for k, v in report.metrics.items()) or (
        "none finite (e.g. an AUC on one class)"
    )
    rows = [
        ("bundle", report.bundle),
        ("network", f"{report.network}, {report.parameters:,} parameters"),
        ("training", f"{report.n_train} items loaded from {report.data_list} (the fedavg weight)"),
        ("evaluation", f"{report.n_val} items from {report.eval_list}"),
        ("step", f"{report.steps} iteration(s), loss {report.loss:.4g}"),
        ("metric", metrics),
    ]
    for name, value in rows:
        console.print(f"{name:>10}  {escape(value)}", highlight=False, soft_wrap=True)
    for warning in report.warnings:
        err_console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)
    console.print(f"task check passed in {report.seconds:.1f} s", highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(task_app, name="task")
