"""The demo's per-site label histogram, read from a real Decathlon-style datalist file."""

from __future__ import annotations

import json

from swarmd.daemon.report import _label_histogram


def _datalist(tmp_path, labels):
    path = tmp_path / "datalist.json"
    items = [{"image": f"{i}.png", "label": y} for i, y in enumerate(labels)]
    path.write_text(json.dumps({"training": items}))
    return path


def test_histogram_lists_every_class_even_when_a_site_has_one(tmp_path):
    assert _label_histogram(_datalist(tmp_path, [0] * 39)) == "39/0"
    assert _label_histogram(_datalist(tmp_path, [1] * 30 + [0] * 9)) == "9/30"
    assert _label_histogram(_datalist(tmp_path, [0, 2, 2])) == "1/0/2"


def test_histogram_of_unlabelled_or_unreadable_datalists(tmp_path):
    assert _label_histogram(_datalist(tmp_path, [None, None])) == "-"
    (tmp_path / "bad.json").write_text("{not json")
    assert _label_histogram(tmp_path / "bad.json") == "?"
    assert _label_histogram(tmp_path / "missing.json") == "?"
