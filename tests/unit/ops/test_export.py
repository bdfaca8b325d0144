"""`swarm model export` refuses what it cannot vouch for: a round that does not exist, one that is not
finalized, an output that already exists (against a real ledger on the session's anvil)."""

from __future__ import annotations

import pytest

from swarmd.config import load_config
from swarmd.errors import UsageError
from swarmd.ops.export import export_bundle

pytestmark = [pytest.mark.chain]


def test_a_round_that_does_not_exist_is_refused(consortium, tmp_path):
    cfg = load_config(consortium.sites[0].config)
    with pytest.raises(UsageError, match="does not exist"):
        export_bundle(cfg, 5, tmp_path / "out")
    with pytest.raises(UsageError, match="does not exist"):
        export_bundle(cfg, -1, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_open_round_has_no_merged_model_to_export(consortium, tmp_path):
    cfg = load_config(consortium.sites[0].config)
    with pytest.raises(UsageError, match="not finalized"):
        export_bundle(cfg, 0, tmp_path / "out")
    assert not (tmp_path / "out").exists()
