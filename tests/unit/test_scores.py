"""Held-out scores: a metric the split cannot define becomes its reason, never a gap or a NaN in JSON."""

from __future__ import annotations

import json
import math

import pytest

from swarmd.scores import as_number, fmt_score, label_classes, parse_scores, scores_of


def test_a_non_finite_metric_is_kept_with_its_reason() -> None:
    assert scores_of({"auc": float("nan"), "acc": 0.5}, n_classes=1) == {"auc": "one class", "acc": 0.5}
    assert scores_of({"auc": float("inf")}, n_classes=2) == {"auc": "not finite"}
    assert scores_of({"per_class": [0.1, 0.2]}, n_classes=2) == {}  # not a scalar: not reported


def test_formatting_and_numbers() -> None:
    assert fmt_score(0.81234) == "0.812" and fmt_score(0.81234, 4) == "0.8123"
    assert fmt_score("one class") == "n/a (one class)"
    assert math.isnan(as_number("one class")) and as_number(0.25) == 0.25


def test_scores_survive_json_and_reject_anything_else() -> None:
    doc = json.loads(json.dumps({"auc": "one class", "dice": 0.7, "n": 3}, allow_nan=False))
    assert parse_scores(doc) == {"auc": "one class", "dice": 0.7, "n": 3.0}
    with pytest.raises(ValueError, match="neither a number nor a reason"):
        parse_scores({"auc": [1]})


def test_label_classes_counts_class_like_labels_only() -> None:
    assert label_classes([{"label": 0}, {"label": 0}]) == 1
    assert label_classes([{"label": [1, 0]}, {"label": [0, 1]}]) == 2
    assert label_classes([{"label": "mask.nii.gz"}]) is None  # a segmentation mask is no class
