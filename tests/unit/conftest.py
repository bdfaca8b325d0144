"""Unit fixtures shared across packages: a task's root folder holding a minimal bundle."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A folder with `bundle/configs/{train,evaluate,other}.json`, as `[task] bundle = "bundle"` names it;
    train.json sets the learning rate (0.1) that SCAFFOLD and FedProx checks read."""
    configs = tmp_path / "bundle" / "configs"
    configs.mkdir(parents=True)
    (configs / "train.json").write_text('{"lr": 0.1}')
    (configs / "evaluate.json").write_text("{}")
    (configs / "other.json").write_text("{}")
    return tmp_path
