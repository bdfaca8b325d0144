"""Reading differential privacy's spend back from the chain: each site's cumulative epsilon per round (every
commit records it, in thousandths), the largest epsilon behind one merged model, and the epsilon plot.

A site that does not commit in a round (its budget is spent, or it missed the window) keeps the epsilon of its
latest commit: the chain shows it frozen. A commit that records 0 comes from a site that keeps no privacy
account (DP off); such a site offers no epsilon guarantee at all, which `ModelEpsilon.without_dp` names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swarmd.ledger import RoundInfo, RoundStatus


@dataclass(frozen=True)
class EpsilonPoint:
    """A site's cumulative epsilon as of one round."""

    round: int
    site: str
    milli_epsilon: int
    committed: bool  # False: carried from the site's latest earlier commit

    @property
    def epsilon(self) -> float:
        return self.milli_epsilon / 1000

    def to_json(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "site": self.site,
            "epsilon": self.epsilon,
            "milli_epsilon": self.milli_epsilon,
            "committed": self.committed,
        }


def epsilon_points(rounds: Sequence[RoundInfo]) -> list[EpsilonPoint]:
    """One point per round per site that has reported an epsilon by then, rounds in order, sites in order of
    their first report. Rounds without any commit (the open round before its first) add nothing."""
    latest: dict[str, int] = {}
    out: list[EpsilonPoint] = []
    for info in sorted(rounds, key=lambda i: i.round):
        if not info.commits:
            continue
        now = {c.site: c.milli_epsilon for c in info.commits if c.milli_epsilon > 0}
        latest.update(now)
        out.extend(EpsilonPoint(info.round, s, e, s in now) for s, e in latest.items())
    return out


@dataclass(frozen=True)
class ModelEpsilon:
    """What the merged model of `round` reveals, by the accounts of the sites whose updates are in it."""

    round: int
    milli_epsilon: int | None  # the largest epsilon any contributing site had spent; None: no site reported
    site: str | None  # the site that spent it
    contributors: tuple[str, ...]  # sites included in any finalized round up to `round`
    without_dp: tuple[str, ...]  # contributors whose commits carried no epsilon: no guarantee for them

    @property
    def epsilon(self) -> float | None:
        return None if self.milli_epsilon is None else self.milli_epsilon / 1000

    def to_json(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "max_epsilon": self.epsilon,
            "site": self.site,
            "contributors": list(self.contributors),
            "sites_without_dp": list(self.without_dp),
        }


def model_epsilon(rounds: Sequence[RoundInfo], r: int) -> ModelEpsilon:
    """The merged model of round `r` descends from every finalized round up to `r` (abandoned ones add
    nothing), so each site included in any of them contributed; its spend is that of its latest included
    commit (epsilon only grows). Recovered dropouts are not included: their inputs are not in the sum."""
    spent: dict[str, int] = {}
    for info in sorted(rounds, key=lambda i: i.round):
        if info.round > r or info.status is not RoundStatus.FINALIZED:
            continue
        for site in info.included:
            commit = info.commit_of(site)
            eps = commit.milli_epsilon if commit is not None else 0
            spent[site] = max(spent.get(site, 0), eps)
    with_dp = {s: e for s, e in spent.items() if e > 0}
    top = max(with_dp, key=lambda s: with_dp[s]) if with_dp else None
    return ModelEpsilon(
        round=r,
        milli_epsilon=with_dp[top] if top is not None else None,
        site=top,
        contributors=tuple(spent),
        without_dp=tuple(s for s, e in spent.items() if e == 0),
    )


def plot_epsilon(points: Sequence[EpsilonPoint], out: Path) -> Path:
    """Cumulative epsilon vs round, one line per site; hollow markers where the value is carried over."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(8, 4.5))
    sites = list(dict.fromkeys(p.site for p in points))
    for site in sites:
        mine = [p for p in points if p.site == site]
        (line,) = ax.plot([p.round for p in mine], [p.epsilon for p in mine], label=site[:10])
        for committed in (True, False):
            sel = [p for p in mine if p.committed is committed]
            ax.scatter(
                [p.round for p in sel],
                [p.epsilon for p in sel],
                color=line.get_color(),
                facecolors=line.get_color() if committed else "none",
                zorder=3,
            )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")
    ax.set_ylabel("cumulative epsilon (from the chain)")
    ax.set_title("privacy spent per site (hollow: no commit that round, epsilon frozen)")
    ax.grid(alpha=0.3)
    if sites:
        ax.legend(fontsize="small")
    else:
        ax.text(0.5, 0.5, "no site has reported an epsilon", ha="center", transform=ax.transAxes)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
