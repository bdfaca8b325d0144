"""A validation split with one class gives an undefined ROC AUC: the real trainer reports it as "one class"
instead of dropping it (which made the site vanish from status, metrics and the plot)."""

from __future__ import annotations

import json

from swarmd.train import BundleTrainer, initial_weights


def test_auc_on_a_one_class_split_is_reported_as_undefined(cls_task, demo_classification, tmp_path) -> None:
    test = json.loads(demo_classification.test_datalist.read_text())
    base = demo_classification.test_datalist.parent
    negatives = [dict(e, image=str(base / e["image"])) for e in test["validation"] if e["label"] == 0]
    assert negatives
    one_class = tmp_path / "one-class.json"
    one_class.write_text(json.dumps({"validation": negatives}))
    trainer = BundleTrainer(
        cls_task, demo_classification.site_datalists[0], device="cpu", threads=1, workdir=tmp_path / "w"
    )
    trainer.initialize()
    try:
        w = initial_weights(cls_task)
        assert trainer.evaluate(w, one_class) == {"auc": "one class"}
        both = trainer.evaluate(w, demo_classification.test_datalist)  # both classes: a number
        assert isinstance(both["auc"], float)
    finally:
        trainer.finalize()
