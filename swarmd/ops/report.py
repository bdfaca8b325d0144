"""Reading a swarm's results back: per-site journals (read through `Journal.read`) joined with the
chain's rounds, as a plot and as each site's held-out scores."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from swarmd.daemon.store import Journal
from swarmd.ledger import Member, RoundInfo
from swarmd.ops.consortium import LocalConsortium
from swarmd.scores import Score, Scores, fmt_score, is_defined, parse_scores

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


Curve = Sequence[tuple[int, Scores]]  # (round, scores) of one model line


def _series(curve: Curve) -> dict[str, list[tuple[int, Score]]]:
    out: dict[str, list[tuple[int, Score]]] = {}
    for r, scores in curve:
        for name, value in scores.items():
            out.setdefault(name, []).append((r, value))
    return out


def _draw_line(ax: Axes, points: list[tuple[int, Score]], label: str, **style: Any) -> None:
    """One metric's line; rounds where it is undefined are crosses at the foot of the axis, labelled
    with the reason ("n/a (one class)"), so a site never silently drops out of the plot."""
    defined = [(r, float(v)) for r, v in points if is_defined(v)]
    line = None
    if defined:
        xs, ys = zip(*defined, strict=True)
        (line,) = ax.plot(xs, ys, label=label, **style)
    missing = [(r, v) for r, v in points if not is_defined(v)]
    if missing:
        reasons = sorted({fmt_score(v) for _, v in missing})
        ax.scatter(
            [r for r, _ in missing],
            [0.02] * len(missing),
            marker="x",
            color=line.get_color() if line is not None else style.get("color"),
            transform=ax.get_xaxis_transform(),  # x in rounds, y in axis fraction: visible at any scale
            label=f"{label}: {', '.join(reasons)}",
            clip_on=False,
        )


def draw_rounds(
    rounds: Sequence[RoundInfo],
    members: Sequence[Member],
    journals: Sequence[Path],
    *,
    names: Mapping[str, str] | None = None,
    alone: Mapping[str, Curve] | None = None,
) -> Figure:
    """The figure of `plot_rounds`: the swarm's held-out metric per round (from each site's journal; sites
    whose lines coincide, as on a shared test set, are drawn once), each site's local-only curve beside
    it (`alone`: site name -> curve), and each round's leader by site name (`names`: account -> name)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_metric, ax_lead) = plt.subplots(2, 1, figsize=(9, 6), height_ratios=[3, 1], sharex=True)
    swarm_lines: dict[str, list[str]] = {}  # the series, as text -> the sites that drew it
    series_of: dict[str, dict[str, list[tuple[int, Score]]]] = {}
    for path in journals:
        series = Journal.read(path).metric_series()
        key = repr(sorted(series.items()))
        swarm_lines.setdefault(key, []).append(path.parent.parent.name)
        series_of[key] = series
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (key, sites) in enumerate(swarm_lines.items()):
        who = ", ".join(sites) if len(sites) < len(journals) or len(journals) == 1 else "every site"
        for name, points in series_of[key].items():
            _draw_line(ax_metric, points, f"swarm {name} ({who})", marker="o", color=colors[i % len(colors)])
    for j, (site, curve) in enumerate((alone or {}).items()):
        color = colors[(len(swarm_lines) + j) % len(colors)]
        for name, points in _series(curve).items():
            _draw_line(ax_metric, points, f"{site} alone {name}", linestyle="--", marker=".", color=color)
    ax_metric.set_ylabel("held-out metric")
    ax_metric.set_title("swarm vs each site alone (round -1: initial model)")
    ax_metric.grid(alpha=0.3)
    if ax_metric.get_legend_handles_labels()[0]:
        ax_metric.legend(fontsize="small")
    _draw_leaders(ax_lead, rounds, members, names or {})
    fig.tight_layout()
    return fig


def _draw_leaders(
    ax: Axes, rounds: Sequence[RoundInfo], members: Sequence[Member], names: Mapping[str, str]
) -> None:
    """One square per round on the row of its leader (red: a leader failed and was replaced)."""
    accounts = [m.account.lower() for m in members]
    known = {a.lower(): n for a, n in names.items()}
    for info in rounds:
        if info.leader:
            y = accounts.index(info.leader.lower()) if info.leader.lower() in accounts else -1
            ax.scatter(
                [info.round], [y], marker="s", s=80, color="tab:red" if info.failed_leaders else "tab:blue"
            )
    ax.set_yticks(range(len(accounts)), [known.get(a, a[:10]) for a in accounts], fontsize="small")
    ax.set_xlabel("round")
    ax.set_ylabel("leader")


def plot_rounds(
    rounds: Sequence[RoundInfo],
    members: Sequence[Member],
    journals: Sequence[Path],
    out: Path,
    *,
    names: Mapping[str, str] | None = None,
    alone: Mapping[str, Curve] | None = None,
) -> Path:
    """Write `draw_rounds` as a PNG."""
    import matplotlib.pyplot as plt

    fig = draw_rounds(rounds, members, journals, names=names, alone=alone)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


@dataclass(frozen=True)
class SiteOutcome:
    """One site's held-out scores: the initial model, the swarm's final model, and training alone."""

    name: str
    initial: Scores
    swarm: Scores
    local_only: Scores
    labels: str  # the site's training label histogram, e.g. "41/7"
    alone_curve: tuple[tuple[int, Scores], ...] = ()  # training alone, (round, scores) at each evaluation
    personalised: Scores = field(default_factory=dict)  # `swarm.personalise_steps`: the fine-tuned model


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
    local_steps = task.swarm.local_steps
    steps = task.swarm.rounds * local_steps
    out: list[SiteOutcome] = []
    for site in consortium.sites:
        journal = Journal.read(site.journal)
        alone: Scores = {}
        curve: tuple[tuple[int, Scores], ...] = ()
        if local_baseline:
            result = train_alone(
                task,
                site.data_list,
                consortium.test_list or site.data_list,  # no shared test set: the site's validation
                steps=steps,
                workdir=workdir / site.name,
                name=site.name,
                eval_every=local_steps * task.swarm.eval_every,  # the swarm's evaluation rounds
                threads=1,
            )
            alone = result.metrics
            # From the same initial model as the swarm's line, then the round whose steps it has run.
            points = [(done // local_steps - 1, scores) for done, scores in result.curve]
            curve = ((-1, dict(journal.baseline)), *points) if journal.baseline else tuple(points)
        out.append(
            SiteOutcome(
                site.name,
                dict(journal.baseline),
                journal.final_metrics(),
                alone,
                _label_histogram(site.data_list),
                curve,
                parse_scores(journal.personalised.get("metrics", {})),
            )
        )
    return out
