"""Shared fixtures: a devnet, site identities, generated data. Subsystem fixtures live here too."""

from __future__ import annotations

import os

import pytest

# Tests must behave the same on a 2-core CI box and a GPU workstation.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture
def tmp_state(tmp_path):
    """An empty site state dir."""
    d = tmp_path / "state"
    d.mkdir()
    return d
