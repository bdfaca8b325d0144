"""How rounds read to a person: the rounds table, and round numbering in words. Shared by `swarm ledger`
and the devnet demo's closing summary, so both say the same thing."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from rich.table import Table

if TYPE_CHECKING:
    from swarmd.ledger import RoundInfo


def _span(numbers: list[int]) -> str:
    if not numbers:
        return ""
    if numbers == list(range(numbers[0], numbers[-1] + 1)):
        return f"{numbers[0]}" if len(numbers) == 1 else f"{numbers[0]}-{numbers[-1]}"
    return ", ".join(map(str, numbers))


def _rounds(n: int) -> str:
    return f"{n} round" + ("" if n == 1 else "s")


def rounds_summary(infos: list[RoundInfo], rounds_total: int | None = None) -> str:
    """Round numbering in words: rounds count from 0, so a task of 10 rounds ends with round 9's model
    and leaves round 10 open on chain, untrained. E.g. "10 rounds finalized (0-9); final model: round 9;
    round 10 open (the task has 10 rounds, 0-9: no site trains it)"."""
    from swarmd.ledger import RoundStatus

    done = [i.round for i in infos if i.status is RoundStatus.FINALIZED]
    dropped = [i.round for i in infos if i.status is RoundStatus.ABANDONED]
    parts = [f"{_rounds(len(done))} finalized" + (f" ({_span(done)})" if done else "")]
    if dropped:
        parts.append(f"{len(dropped)} abandoned ({_span(dropped)})")
    if done:
        final = rounds_total is not None and done[-1] >= rounds_total - 1
        parts.append(f"{'final' if final else 'latest'} model: round {done[-1]}")
    else:
        parts.append("no merged model yet (initial model only)")
    last = infos[-1] if infos else None
    if last is not None and last.status in (RoundStatus.OPEN, RoundStatus.ELECTED):
        text = f"round {last.round} {last.status.name.lower()}"
        if rounds_total is not None and last.round >= rounds_total:
            task_rounds = _span(list(range(rounds_total)))
            text += f" (the task has {_rounds(rounds_total)}, {task_rounds}: no site trains it)"
        parts.append(text)
    return "; ".join(parts)


def short_hash(h: bytes | None) -> str:
    return "-" if not h else "0x" + h.hex()[:12] + ".."


def mode_text(info: RoundInfo, cyclic: bool = False) -> str:
    if cyclic:
        return "cyclic"
    return f"secure aggregation ({info.key_count} keys)" if info.secure_aggregation else "plain"


def path_text(info: RoundInfo, sites: list[str], names: Mapping[str, str]) -> str:
    """A cyclic round's path: `sites` (the members) and the committers in the round's drawn order, up to
    the last committer; a site the path went past without a commit was skipped."""
    from swarmd.ledger.cyclic import visit_order

    order = visit_order(info.round, info.base_hash, [*sites, *info.committers])
    committed = {a.lower() for a in info.committers}
    reached = max((i for i, a in enumerate(order) if a.lower() in committed), default=-1)
    steps = [
        site_label(names, a) if a.lower() in committed else f"({site_label(names, a)} skipped)"
        for a in order[: reached + 1]
    ]
    text = "path: " + (" -> ".join(steps) or "no commit yet")
    rest = [site_label(names, a) for a in order[reached + 1 :]]
    return text + (f"; not reached: {', '.join(rest)}" if rest else "")


def site_label(names: Mapping[str, str], account: str | None, width: int = 12) -> str:
    """The site name an account joined under (`Ledger.site_names()`), else the account's prefix."""
    if not account:
        return "-"
    return names.get(account.lower()) or account[:width]


def rounds_table(
    infos: list[RoundInfo], names: Mapping[str, str] | None = None, *, cyclic: bool = False
) -> Table:
    """The rounds; leaders and recovered sites by site name where `names` (lowercase account -> name)
    knows them; `cyclic`: the task's rounds are cyclic (the chain does not record it)."""
    names = names or {}
    t = Table(title="rounds")
    cols = ("round", "status", "mode", "leader", "term", "commits", "samples", "included", "recovered")
    for col in (*cols, "merged model"):
        t.add_column(col)
    for i in infos:
        t.add_row(
            str(i.round),
            i.status.name.lower(),
            mode_text(i, cyclic),
            site_label(names, i.leader),
            str(i.term),
            str(len(i.commits)),
            str(sum(c.n_samples for c in i.commits)),
            str(len(i.included)),
            ", ".join(site_label(names, a, 10) for a in i.recovered) or "-",
            short_hash(i.merged_hash),
        )
    return t
