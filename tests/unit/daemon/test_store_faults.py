"""Bad local state heals: an unreadable journal is quarantined, a full disk (a real, small tmpfs
this test mounts) corrupts nothing and is reported as a problem until space returns."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from swarmd.checkpoint import save_file
from swarmd.codec import Digest
from swarmd.daemon.state import DaemonState, ProblemKind, Problems
from swarmd.daemon.store import JOURNAL_PROBLEM, QUARANTINE, Journal, ModelStore
from swarmd.fsutil import DiskFullError, atomic_write

H1 = Digest(bytes([1]) * 32)


def _model(seed: int, n: int = 4096) -> dict[str, torch.Tensor]:
    return {"w": torch.randn(n, generator=torch.Generator().manual_seed(seed))}


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs of our own: the only honest way to see ENOSPC. Needs root and mount rights."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@contextlib.contextmanager
def _disk_full(fs: Path) -> Iterator[None]:
    """Fill `fs` to the last byte while the block runs; free the space after it."""
    filler = fs / "filler"
    with open(filler, "wb", buffering=0) as fh, contextlib.suppress(OSError):
        while True:
            fh.write(b"\0" * 4096)
    with contextlib.suppress(OSError), open(filler, "ab", buffering=0) as fh:
        while True:
            fh.write(b"\0")
    try:
        yield
    finally:
        filler.unlink()


def _tmp_files(d: Path) -> list[str]:
    return sorted(p.name for p in d.rglob("*.tmp"))


def test_a_full_disk_keeps_the_old_journal_and_memory_and_heals_when_space_returns(small_fs):
    problems = Problems()
    path = small_fs / "journal.json"
    journal = Journal.recover(path, problems)
    journal.update(0, update_hash=H1, n_samples=3)
    journal.set_baseline({"auc": 0.5})
    before = path.read_bytes()
    with _disk_full(small_fs):
        big = {f"m{i}": float(i) for i in range(2000)}  # more than the last free bytes
        with pytest.raises(DiskFullError, match="No space left"):
            journal.update(1, n_samples=9, metrics=big)
        with pytest.raises(DiskFullError):
            journal.set_baseline(big)
        assert path.read_bytes() == before and _tmp_files(small_fs) == []
        # memory still matches the file: nothing half-applied for a later save to persist
        assert 1 not in journal.rounds and journal.baseline == {"auc": 0.5}
        (p,) = problems.current()
        assert p.kind == ProblemKind.DISK_FULL and "No space left" in p.detail
    journal.update(1, n_samples=9, metrics=big)  # space is back: the same write succeeds
    assert problems.current() == [] and [p.kind for p in problems.repaired()] == [ProblemKind.DISK_FULL]
    again = Journal.open(path)
    assert again.get(0).update_hash == H1 and again.get(1).metrics == big


def test_a_full_disk_keeps_the_old_checkpoint_and_is_reported_until_space_returns(small_fs):
    problems = Problems()
    store = ModelStore(small_fs / "ckpt", problems=problems)
    old = store.put(_model(1))
    old_bytes = store.path(old).read_bytes()
    export = small_fs / "export.safetensors"
    save_file(_model(1), export)
    with _disk_full(small_fs):
        with pytest.raises(DiskFullError):
            store.put(_model(2))
        with pytest.raises(DiskFullError):
            save_file(_model(3), export)  # over an existing file: the old one stays
        with pytest.raises(DiskFullError):
            atomic_write(small_fs / "raw.bin", [b"x" * 65536] * 4)
        assert store.hashes() == [old] and store.path(old).read_bytes() == old_bytes
        assert _tmp_files(small_fs) == [] and not (small_fs / "raw.bin").exists()
        assert [p.kind for p in problems.current()] == [ProblemKind.DISK_FULL]
        assert store.get(old, keep=False)["w"].equal(_model(1)["w"])  # reading still works
    h = store.put(_model(2))
    assert problems.current() == [] and store.get(h, keep=False)["w"].equal(_model(2)["w"])


@pytest.mark.parametrize("content", ["{not json", json.dumps({"v": 99}), "\0" * 64])
def test_an_unreadable_journal_is_quarantined_and_a_fresh_one_started(tmp_path, content):
    path = tmp_path / "journal.json"
    path.write_text(content)
    problems = Problems()
    journal = Journal.recover(path, problems)
    assert journal.rounds == {} and not path.exists()
    (moved,) = (tmp_path / QUARANTINE).iterdir()
    assert moved.read_text() == content
    (p,) = problems.current()
    assert p.kind == ProblemKind.CORRUPT_JOURNAL and str(moved) in p.detail and "resync" in p.action
    assert JOURNAL_PROBLEM in problems
    journal.update(4, n_samples=1)  # the fresh journal is written where the old one was
    assert Journal.open(path).get(4).n_samples == 1


def test_a_readable_journal_is_not_a_problem(tmp_path):
    Journal.open(tmp_path / "journal.json").update(0, n_samples=2)
    problems = Problems()
    assert Journal.recover(tmp_path / "journal.json", problems).get(0).n_samples == 2
    assert problems.current() == [] and not (tmp_path / QUARANTINE).exists()


def test_problems_appear_in_the_snapshot_once_and_move_to_repaired_when_cleared(caplog):
    state = DaemonState(site="a", address="0xA")
    assert state.snapshot()["problems"] == []
    assert state.problems.report("model 0x01", ProblemKind.CORRUPT_CHECKPOINT, "bad hash", "fetching")
    assert not state.problems.report("model 0x01", ProblemKind.INITIAL_MODEL, "no peer", "retrying")
    (p,) = state.snapshot()["problems"]
    assert (p["kind"], p["detail"], p["action"]) == ("initial_model", "no peer", "retrying")
    assert json.loads(json.dumps(state.snapshot()))["problems"] == [p]  # the control socket's JSON
    assert sum("problem" in r.message for r in caplog.records) == 1  # logged once
    state.problems.clear("model 0x01")
    state.problems.clear("model 0x01")
    snap = state.snapshot()
    assert snap["problems"] == [] and len(snap["repaired"]) == 1
    assert snap["repaired"][0]["since"] == p["since"] and snap["repaired"][0]["repaired"] >= p["since"]


def test_disk_full_error_is_named_by_errno(tmp_path):
    from swarmd.fsutil import store_error

    assert isinstance(store_error(tmp_path, OSError(errno.ENOSPC, "No space left on device")), DiskFullError)
    assert isinstance(store_error(tmp_path, OSError(errno.EDQUOT, "Disk quota exceeded")), DiskFullError)
    assert not isinstance(store_error(tmp_path, OSError(errno.EACCES, "Permission denied")), DiskFullError)
