"""`swarmd.bench.report`: the shared JSON/Markdown writer, tables, goal records and figures."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from swarmd.bench.report import (
    SCHEMA,
    Report,
    goal,
    goals_md,
    mean_sd,
    num,
    pyplot,
    save_figure,
    table,
    write_report,
)

PNG = b"\x89PNG\r\n\x1a\n"


def test_table_prints_cells_as_given_and_an_empty_cell_as_a_blank() -> None:
    text = table(("a", "b", ""), [(1, "x", "met"), ("2.50", "", "")])
    assert text.splitlines() == ["| a | b | |", "|---|---|---|", "| 1 | x | met |", "| 2.50 | | |"]
    assert table("a | b | ", [(1, "x", "met"), ("2.50", "", "")]) == text  # the header as one string


def test_numbers_get_three_significant_digits_or_thousands_separators() -> None:
    assert [num(0.96812), num(12345.6), num(79605), num("n/a")] == ["0.968", "12,346", "79,605", "n/a"]


def test_goals_table_marks_a_missed_goal() -> None:
    goals = [goal("commit gas", 79605, 80000, True), goal("overhead", 1.123, 0.108, False)]
    assert goals_md(goals).splitlines()[2:] == [
        "| commit gas | 79,605 | 80,000 | met |",
        "| overhead | 1.12 | 0.108 | **MISSED** |",
    ]
    assert goals_md([]) == ""


def test_goal_record_has_the_schema_keys_and_a_plain_bool() -> None:
    g = goal("x", 1.0, 2.0, 1)  # type: ignore[arg-type]  # a numpy bool or an int must still be a JSON bool
    assert g == {"goal": "x", "value": 1.0, "limit": 2.0, "met": True, "note": ""}
    assert g["met"] is True


def test_mean_sd_skips_missing_values() -> None:
    assert mean_sd([1.0, None, float("nan"), 3.0]) == pytest.approx((2.0, math.sqrt(2.0)))
    assert mean_sd([0.5]) == (0.5, 0.0)
    assert all(math.isnan(v) for v in mean_sd([]))


def test_save_figure_writes_a_png_and_closes_the_figure(tmp_path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = save_figure(fig, tmp_path / "sub" / "line.png")
    assert path.read_bytes().startswith(PNG)
    assert fig.number not in plt.get_fignums()


def test_write_report_writes_json_and_markdown(tmp_path: Path) -> None:
    plot = tmp_path / "demo_plot.png"
    report = Report(
        "demo",
        {"rows": [1, 2]},
        [goal("speed", 2.0, 1.0, True)],
        "| x |\n|---|\n| 1 |\n",
        [plot],
        ["A note."],
    )
    doc = write_report(tmp_path, report, command="swarm bench demo --quick", quick=True, seconds=1.234)

    on_disk = json.loads((tmp_path / "demo.json").read_text())
    assert on_disk == json.loads(json.dumps(doc))
    assert list(on_disk) == [
        "bench",
        "schema",
        "command",
        "quick",
        "finished",
        "seconds",
        "machine",
        "versions",
        "goals",
        "notes",
        "plots",
        "result",
    ]
    assert on_disk["schema"] == SCHEMA and on_disk["seconds"] == 1.2 and on_disk["plots"] == ["demo_plot.png"]
    assert {"cores", "ram_gb", "gpu", "load_avg_at_start"} <= set(on_disk["machine"])
    assert {"libzmq", "torch", "swarmd_git"} <= set(on_disk["versions"])

    md = (tmp_path / "demo.md").read_text().split("\n\n")
    assert md[0] == "## demo"
    assert md[1].startswith("`swarm bench demo --quick` (quick, 1.2 s, ")
    assert md[2] == "| x |\n|---|\n| 1 |"
    assert md[3].startswith("| goal | measured | limit | |")
    assert md[4:] == ["A note.", "![demo_plot](demo_plot.png)\n"]


def test_the_load_average_is_the_one_read_when_the_bench_started(monkeypatch) -> None:
    import swarmd.bench.report as report_mod

    monkeypatch.setattr(report_mod, "_load_at_start", None)
    monkeypatch.setattr(report_mod.os, "getloadavg", lambda: (0.5, 0.4, 0.3))
    report_mod.mark_start()
    monkeypatch.setattr(report_mod.os, "getloadavg", lambda: (4.0, 3.0, 2.0))  # the bench loaded the box
    assert report_mod.machine()["load_avg_at_start"] == [0.5, 0.4, 0.3]
