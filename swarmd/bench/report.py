"""What every bench writes: DIR/<name>.json and DIR/<name>.md, goal records, Markdown tables, figures.

A bench measures (its own module), judges its goals with `goal()`, and renders tables and plots with
`table()` and `save_figure()`; it hands the lot over as a `Report`, and `write_report` wraps the result
with the command, the machine, the package versions and the goals. The JSON layout (schema 1) is what
docs/benchmarks.md and the smoke test read: keep its keys stable.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, TypedDict

SCHEMA = 1
Step = tuple[str, Callable[[], Any]]  # (what a progress display shows, the work)


class Goal(TypedDict):
    """One goal a bench is held against, as it appears in <name>.json."""

    goal: str
    value: float
    limit: float
    met: bool
    note: str


def goal(name: str, value: float, limit: float, met: bool, note: str = "") -> Goal:
    return {"goal": name, "value": value, "limit": limit, "met": bool(met), "note": note}


@dataclass(frozen=True)
class Report:
    """One bench run, measured and rendered: what `write_report` puts into <name>.json and <name>.md."""

    name: str
    result: dict[str, Any]
    goals: list[Goal]
    tables: str
    plots: list[Path]
    notes: list[str] = field(default_factory=list)


# --- measuring helpers ------------------------------------------------------------------------------
def mean_sd(values: Iterable[float | None]) -> tuple[float, float]:
    """Mean and sample standard deviation, ignoring None and NaN (nan, nan when nothing is left)."""
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return float("nan"), float("nan")
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


_load_at_start: list[float] | None = None


def mark_start() -> None:
    """Note the load average now, as a bench starts: `machine()` reports it (read at the end, when the
    bench itself has loaded the box, it said more about the bench than about the box it ran on)."""
    global _load_at_start
    _load_at_start = [round(x, 2) for x in os.getloadavg()]


def machine() -> dict[str, Any]:
    import psutil
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {
        "cores": os.cpu_count(),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "gpu": gpu,
        "cpu": platform.processor() or platform.machine(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "load_avg_at_start": _load_at_start or [round(x, 2) for x in os.getloadavg()],
    }


def versions() -> dict[str, str]:
    import zmq

    out = {"libzmq": zmq.zmq_version()}
    for pkg in ("swarmd", "torch", "monai", "pyzmq", "web3", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    out["swarmd_git"] = git_revision()
    return out


def git_revision() -> str:
    """The checkout's commit (with -dirty when the tree has changes), or 'unknown' outside git."""
    try:
        done = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip() or "unknown"


# --- rendering --------------------------------------------------------------------------------------
def num(v: Any) -> str:
    """A measured figure for a table: 3 significant digits, thousands separators for large ones."""
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def table_row(cells: Sequence[object]) -> str:
    return "|" + "|".join(f" {c} " if str(c) else " " for c in cells) + "|"


def table(header: str | Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A Markdown table. `header`: the column names, or one string of them joined by " | ". Cells are
    printed as given (format them first)."""
    names = header.split(" | ") if isinstance(header, str) else header
    return "\n".join([table_row(names), "|---" * len(names) + "|", *(table_row(r) for r in rows)])


def goals_md(goals: Sequence[Goal]) -> str:
    if not goals:
        return ""
    rows = [(g["goal"], num(g["value"]), num(g["limit"]), "met" if g["met"] else "**MISSED**") for g in goals]
    return table(("goal", "measured", "limit", ""), rows)


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path) -> Path:
    """Lay out, write as PNG (110 dpi) and close `fig`; returns `path`."""
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    return path


# --- the files --------------------------------------------------------------------------------------
def write_report(out: Path, report: Report, *, command: str, quick: bool, seconds: float) -> dict[str, Any]:
    """Write DIR/<name>.json and DIR/<name>.md for `report`; returns the JSON document."""
    doc: dict[str, Any] = {
        "bench": report.name,
        "schema": SCHEMA,
        "command": command,
        "quick": quick,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(seconds, 1),
        "machine": machine(),
        "versions": versions(),
        "goals": report.goals,
        "notes": report.notes,
        "plots": [p.name for p in report.plots],
        "result": report.result,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{report.name}.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    (out / f"{report.name}.md").write_text(_markdown(doc, report))
    return doc


def _markdown(doc: dict[str, Any], report: Report) -> str:
    m = doc["machine"]
    md = [
        f"## {report.name}",
        "",
        f"`{doc['command']}` ({'quick' if doc['quick'] else 'full'}, {doc['seconds']} s, {doc['finished']}), "
        f"{m['cores']} cores, {m['ram_gb']} GiB RAM, GPU: {m['gpu']}, load average at start "
        f"{m['load_avg_at_start'][0]}.",
        "",
        report.tables.strip(),
    ]
    if report.goals:
        md += ["", goals_md(report.goals)]
    for note in report.notes:
        md += ["", note]
    for p in report.plots:
        md += ["", f"![{p.stem}]({p.name})"]
    return "\n".join(md) + "\n"
