"""Top-k error feedback's residual in the state dir: written 0600 and bound to its task and round, it
survives a restart (a new compressor picks it up), a crash before the update was stored retrains from
the residual it used, and a foreign, corrupt or mismatched file is refused with ResidualError (the
compressor moves it aside and starts from zero)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import torch

from swarmd.compress import Encoding, decompressed
from swarmd.train.residual import ResidualError, ResidualStore, UpdateCompressor

TASK = b"\x11" * 32
ENC = Encoding("topk", topk_ratio=0.1)


def _update(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(50, generator=g), "n": torch.tensor(seed, dtype=torch.int64)}


def _sent(state: dict[str, torch.Tensor], template: dict[str, torch.Tensor]) -> torch.Tensor:
    return decompressed(state, template, ENC)["w"]


def test_residual_survives_a_restart_and_error_feedback_holds_across_rounds(tmp_path: Path) -> None:
    first = UpdateCompressor(ENC, tmp_path, TASK)
    u1, u2 = _update(1), _update(2)
    s1 = first.compress(1, u1)
    store = ResidualStore(tmp_path / "residual", TASK)
    assert store.rounds() == [1]
    assert stat.S_IMODE(store.path(1).stat().st_mode) == 0o600
    r1 = store.load(1, u1)["w"]
    assert torch.equal(_sent(s1, u1) + r1, u1["w"])
    restarted = UpdateCompressor(ENC, tmp_path, TASK)  # a new process: only the file carries the residual
    s2 = restarted.compress(3, u2)  # rounds may be skipped: the newest older residual is used
    r3 = store.load(3, u2)["w"]
    assert torch.equal(_sent(s2, u2) + r3, u2["w"] + r1)
    assert store.rounds() == [1, 3]  # the one just used stays until a later round has used round 3's


def test_a_crash_before_the_update_was_stored_retrains_from_the_same_residual(tmp_path: Path) -> None:
    c = UpdateCompressor(ENC, tmp_path, TASK)
    c.compress(1, _update(1))
    r1 = ResidualStore(tmp_path / "residual", TASK).load(1, _update(1))["w"]
    c.compress(2, _update(2))  # written, then the site crashed before storing round 2's update
    again = UpdateCompressor(ENC, tmp_path, TASK)
    u = _update(5)  # round 2 retrained: a different update, the same residual under it
    sent = again.compress(2, u)
    r2 = ResidualStore(tmp_path / "residual", TASK).load(2, u)["w"]
    assert torch.equal(_sent(sent, u) + r2, u["w"] + r1)


def test_foreign_stale_and_corrupt_files_are_refused_by_name(tmp_path: Path) -> None:
    store = ResidualStore(tmp_path, TASK)
    store.save(4, {"w": torch.ones(50)})
    with pytest.raises(ResidualError, match="belongs to task 0x1111"):
        ResidualStore(tmp_path, b"\x22" * 32).load(4, _update(0))
    with pytest.raises(ResidualError, match="this model's floating tensors"):
        store.load(4, {"w": torch.ones(51)})
    store.path(4).rename(store.path(6))  # a file whose name and contents disagree
    with pytest.raises(ResidualError, match="says round '4', its name round 6"):
        store.load_before(7, _update(0))
    store.path(6).write_bytes(store.path(6).read_bytes()[:40])
    with pytest.raises(ResidualError, match="corrupt or truncated"):
        store.load(6, _update(0))


def test_the_compressor_moves_a_refused_residual_aside_and_starts_from_zero(tmp_path: Path) -> None:
    ResidualStore(tmp_path / "residual", b"\x22" * 32).save(1, {"w": torch.ones(50)})
    u = _update(3)
    sent = UpdateCompressor(ENC, tmp_path, TASK).compress(2, u)
    residual = ResidualStore(tmp_path / "residual", TASK).load(2, u)["w"]
    assert torch.equal(_sent(sent, u) + residual, u["w"])  # zero residual under it
    assert [p.name.split(".")[0] for p in (tmp_path / "residual" / "refused").iterdir()] == ["round-1"]


def test_other_modes_keep_no_residual(tmp_path: Path) -> None:
    sent = UpdateCompressor(Encoding("int8"), tmp_path, TASK).compress(1, _update(1))
    assert "__swarmd_encoding__" in sent and not (tmp_path / "residual").exists()
