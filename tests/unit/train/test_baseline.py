"""Baselines train the same bundle centrally (pooled) and per site, and score on the test set."""

from __future__ import annotations

import json

from swarmd.train.baseline import centralized, local_only, pooled_datalist


def test_pooled_datalist_holds_every_site_entry(demo_classification, tmp_path):
    pooled = json.loads(pooled_datalist(demo_classification.site_datalists, tmp_path / "p.json").read_text())
    assert len(pooled["training"]) == sum(s.n_train for s in demo_classification.sites)
    assert len(pooled["validation"]) == sum(s.n_val for s in demo_classification.sites)
    assert all(e["image"].startswith("/") for e in pooled["training"])


def test_centralized_and_local_only_report_test_metrics(cls_task, demo_classification, tmp_path):
    d = demo_classification
    central = centralized(
        cls_task, d.site_datalists, d.test_datalist, steps=2, workdir=tmp_path, threads=1, eval_every=1
    )
    assert central.name == "centralized" and central.steps == 2
    assert central.n_train == sum(s.n_train for s in d.sites)
    assert [s for s, _ in central.curve] == [1, 2] and "auc" in central.metrics
    alone = local_only(cls_task, d.site_datalists[:1], d.test_datalist, steps=1, workdir=tmp_path, threads=1)
    assert [r.name for r in alone] == ["site-1"] and 0.0 <= alone[0].metrics["auc"] <= 1.0
