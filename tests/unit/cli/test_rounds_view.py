"""Round numbering in words: rounds count from 0, so a task of N rounds ends with round N-1's model and
leaves round N open on chain, untrained; the summary says so."""

from __future__ import annotations

import dataclasses
import io

from rich.console import Console

from swarmd.cli.rounds_view import rounds_summary, rounds_table
from swarmd.ledger import RoundInfo, RoundStatus


def _round(r: int, status: RoundStatus) -> RoundInfo:
    return RoundInfo(r, status, 0, None, (), (), b"\0" * 32, None, (), 0, None, None, None)


def test_a_finished_task_names_its_final_model_and_the_untrained_open_round() -> None:
    infos = [_round(r, RoundStatus.FINALIZED) for r in range(10)] + [_round(10, RoundStatus.OPEN)]
    assert rounds_summary(infos, 10) == (
        "10 rounds finalized (0-9); final model: round 9; "
        "round 10 open (the task has 10 rounds, 0-9: no site trains it)"
    )


def test_without_the_task_the_model_is_the_latest_and_abandoned_rounds_are_counted() -> None:
    statuses = [RoundStatus.FINALIZED, RoundStatus.ABANDONED, RoundStatus.FINALIZED, RoundStatus.ELECTED]
    infos = [_round(r, s) for r, s in enumerate(statuses)]
    assert rounds_summary(infos) == (
        "2 rounds finalized (0, 2); 1 abandoned (1); latest model: round 2; round 3 elected"
    )
    assert rounds_summary(infos, 10).startswith("2 rounds finalized (0, 2); 1 abandoned (1); latest model")


def test_before_any_round_finalizes() -> None:
    assert rounds_summary([_round(0, RoundStatus.OPEN)], 5) == (
        "0 rounds finalized; no merged model yet (initial model only); round 0 open"
    )


def test_one_round_reads_in_the_singular() -> None:
    infos = [_round(0, RoundStatus.FINALIZED), _round(1, RoundStatus.OPEN)]
    assert rounds_summary(infos, 1) == (
        "1 round finalized (0); final model: round 0; "
        "round 1 open (the task has 1 round, 0: no site trains it)"
    )


def test_the_table_names_leaders_and_recovered_sites_by_site_where_known() -> None:
    lead, gone, stranger = "0x" + "Ab" * 20, "0x" + "cd" * 20, "0x" + "ef" * 20
    infos = [
        dataclasses.replace(_round(0, RoundStatus.FINALIZED), leader=lead, recovered=(gone,)),
        dataclasses.replace(_round(1, RoundStatus.FINALIZED), leader=stranger),
    ]
    buf = io.StringIO()
    Console(file=buf, width=250).print(rounds_table(infos, {lead.lower(): "charite", gone: "kings"}))
    rows = [[c.strip() for c in ln.split("│")] for ln in buf.getvalue().splitlines() if ln.startswith("│")]
    assert [(r[4], r[9]) for r in rows] == [("charite", "kings"), (stranger[:12], "-")]
