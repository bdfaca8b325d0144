"""The demo's live progress table and closing summary print an undefined metric as "n/a (one class)"."""

from __future__ import annotations

import io

from rich.console import Console

from swarmd.cli.devnet_cmd import _fmt, progress_table


def test_progress_and_summary_print_the_reason() -> None:
    status = {
        "round": 2, "phase": "train", "leader": None, "n_samples": 5, "last_loss": 0.5,
        "last_merged_round": 1,
        "metrics": {"auc": "one class"}, "baseline": {"auc": 0.5},
    }  # fmt: skip
    buf = io.StringIO()
    Console(file=buf, width=200).print(progress_table([("site-a", status)], 3))
    assert "auc=n/a (one class) (initial 0.500)" in buf.getvalue()
    assert _fmt({"auc": "one class", "acc": 0.25}) == "auc n/a (one class), acc 0.250"
