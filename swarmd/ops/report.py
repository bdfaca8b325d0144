"""Reading a swarm's results back: per-site journals (read through `Journal.read`) joined with the
chain's rounds, as a plot and as each site's held-out scores."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from swarmd.daemon.store import Journal
from swarmd.ledger import Member, RoundInfo
from swarmd.ops.consortium import LocalConsortium


def plot_rounds(
    rounds: Sequence[RoundInfo], members: Sequence[Member], journals: Sequence[Path], out: Path
) -> Path:
    """Each site's held-out metric per round (from its journal) over who led each round (from the chain)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_metric, ax_lead) = plt.subplots(2, 1, figsize=(8, 6), height_ratios=[3, 1], sharex=True)
    for path in journals:
        series = Journal.read(path).metric_series()
        site = path.parent.parent.name
        for name, points in series.items():
            xs, ys = zip(*points, strict=True)
            ax_metric.plot(xs, ys, marker="o", label=f"{site} {name}")
    ax_metric.set_ylabel("held-out metric of the merged model")
    ax_metric.set_title("swarm learning progress (round -1: initial model)")
    ax_metric.grid(alpha=0.3)
    if journals:
        ax_metric.legend(fontsize="small")
    accounts = [m.account for m in members]
    for info in rounds:
        if info.leader:
            y = accounts.index(info.leader) if info.leader in accounts else -1
            ax_lead.scatter(
                [info.round], [y], marker="s", s=80, color="tab:red" if info.failed_leaders else "tab:blue"
            )
    ax_lead.set_yticks(range(len(accounts)), [a[:10] for a in accounts], fontsize="small")
    ax_lead.set_xlabel("round")
    ax_lead.set_ylabel("leader")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


@dataclass(frozen=True)
class SiteOutcome:
    """One site's held-out scores: the initial model, the swarm's final model, and training alone."""

    name: str
    initial: dict[str, float]
    swarm: dict[str, float]
    local_only: dict[str, float]
    labels: str  # the site's training label histogram, e.g. "41/7"


def _label_histogram(datalist: Path) -> str:
    try:
        doc = json.loads(datalist.read_text())
    except (OSError, ValueError):
        return "?"
    counts: dict[str, int] = {}
    for item in doc.get("training", []):
        label = item.get("label")
        if isinstance(label, int | float):
            counts[str(int(label))] = counts.get(str(int(label)), 0) + 1
    if not counts:
        return "-"
    # At least two classes: a site holding only negatives reads "39/0", not "39".
    classes = range(max(2, max(int(k) for k in counts) + 1))
    return "/".join(str(counts.get(str(c), 0)) for c in classes)


def site_outcomes(consortium: LocalConsortium, *, local_baseline: bool, workdir: Path) -> list[SiteOutcome]:
    """Read every site's journal; optionally train each site alone for as many steps as the swarm did."""
    from swarmd.task import load_task
    from swarmd.train.baseline import train_alone

    task = load_task(consortium.task)
    steps = task.swarm.rounds * task.swarm.local_steps
    out: list[SiteOutcome] = []
    for site in consortium.sites:
        journal = Journal.read(site.journal)
        alone: dict[str, float] = {}
        if local_baseline:
            alone = train_alone(
                task,
                site.data_list,
                consortium.test_list or site.data_list,  # no shared test set: the site's validation
                steps=steps,
                workdir=workdir / site.name,
                name=site.name,
                threads=1,
            ).metrics
        out.append(
            SiteOutcome(
                site.name,
                dict(journal.baseline),
                journal.final_metrics(),
                alone,
                _label_histogram(site.data_list),
            )
        )
    return out
