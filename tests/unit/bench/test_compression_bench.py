"""`swarm bench compression`'s arithmetic: the per-mode summary (metric difference to uncompressed on the
same seed, update and round byte ratios), the goals it judges, and its refusals of bad options. The
training itself is what `swarm bench compression --quick` runs."""

from __future__ import annotations

import pytest
import torch

from swarmd.bench.compression import (
    MODES,
    compression_goals,
    compression_report,
    compression_steps,
    summarize,
    wire_size,
)
from swarmd.compress import Encoding, compress
from swarmd.errors import UsageError


def _run(seed: int, aucs: dict[str, float]) -> dict[str, object]:
    sizes = {"none": 100.0, "fp16": 50.0, "bf16": 50.0, "int8": 25.6, "topk": 2.0}
    arms = [
        {"mode": m, "metrics": {"auc": aucs[m], "loss": 1.0}, "update_bytes": sizes[m],
         "plain_update_bytes": 100.0, "model_bytes": 100.0, "coding_ms_per_update": 1.0}
        for m in MODES
    ]  # fmt: skip
    return {"task": "classification", "sites": 3, "rounds": 5, "local_steps": 10, "alpha": 1.0, "seed": seed,
            "topk_ratio": 0.01, "arms": arms}  # fmt: skip


def test_summary_and_goals() -> None:
    runs = [
        _run(0, {"none": 0.90, "fp16": 0.90, "bf16": 0.91, "int8": 0.905, "topk": 0.80}),
        _run(1, {"none": 0.80, "fp16": 0.80, "bf16": 0.79, "int8": 0.80, "topk": 0.70}),
    ]
    rows = {r["mode"]: r for r in summarize(runs)}
    assert rows["int8"]["delta"][0] == pytest.approx(0.0025) and rows["topk"]["worst_delta"] == pytest.approx(
        -0.1
    )
    assert rows["int8"]["update_ratio"] == pytest.approx(0.256)
    assert rows["int8"]["round_ratio"] == pytest.approx(
        (25.6 + 100) / 200
    )  # the merged model is not compressed
    goals = compression_goals(list(rows.values()))
    assert [g["met"] for g in goals] == [True, True]
    report = compression_report(runs, quick=False, load_at_start=1.5)
    assert (
        "| int8 | 0.8525 ± 0.0742 | 0.0025 ± 0.0035 |" in report.tables
        and "load average at start 1.50" in report.notes[0]
    )
    worse = [_run(0, {"none": 0.9, "fp16": 0.9, "bf16": 0.9, "int8": 0.88, "topk": 0.9})]
    assert [g["met"] for g in compression_goals(summarize(worse))] == [True, False]


def test_wire_size_counts_the_manifest_and_the_bytes() -> None:
    state = {"w": torch.zeros(100_000)}
    sent, _ = compress(state, Encoding("int8"))
    assert 400_000 < wire_size(state) < 400_100 and wire_size(sent) < 0.27 * wire_size(state)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"task": "audio"}, "--task must be one of"),
        ({"seeds": 0}, "--seeds"),
        ({"topk_ratio": 2.0}, "--topk-ratio"),
    ],
)
def test_bad_options_are_refused(kw: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        compression_steps(**kw)  # type: ignore[arg-type]
    assert len(compression_steps(quick=True)) == 1 and len(compression_steps(seeds=2)) == 2
