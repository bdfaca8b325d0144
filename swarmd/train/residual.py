"""Error feedback for top-k compression: the residual (what a site did not send) kept across rounds.

Top-k sends the k largest elements of `update + residual` and keeps the rest as the next residual, so
nothing a site learned is dropped, only delayed (Stich et al. 2018, Karimireddy et al. 2019). The
residual lives in the site's state dir as `residual/round-<r>.safetensors` (float32, written atomically,
mode 0600), its metadata naming the task hash and the round whose update produced it. It survives a
restart: round r loads the newest residual of a round before r, writes round r's, and deletes the ones
older than the one it loaded. A crash after writing round r's residual but before the update was stored
retrains round r from round r-1's residual, which is still there; at most two files exist.

A file of another task, of a model with other tensors, or one that cannot be read is refused with
`ResidualError`; `UpdateCompressor` then logs it, moves the file aside and goes on with a zero residual
(losing a residual delays no training, and a foreign one would corrupt it).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path

import safetensors
import safetensors.torch
import torch

from swarmd.compress import Encoding, compress
from swarmd.errors import StoreError
from swarmd.fsutil import atomic_path, quarantine

log = logging.getLogger("swarmd.residual")

_FILE = re.compile(r"round-(\d{1,12})\.safetensors")
_KIND = "swarmd-residual-v1"


class ResidualError(StoreError):
    """A residual file that belongs to another task or model, or that cannot be read."""


class ResidualStore:
    """The residual files of one task in one folder (`<state_dir>/residual`)."""

    def __init__(self, folder: Path, task_hash: bytes) -> None:
        self.folder = Path(folder)
        self.task = "0x" + bytes(task_hash).hex()

    def path(self, r: int) -> Path:
        return self.folder / f"round-{r}.safetensors"

    def rounds(self) -> list[int]:
        """Rounds that have a residual file, ascending."""
        if not self.folder.is_dir():
            return []
        found = (_FILE.fullmatch(p.name) for p in self.folder.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def save(self, r: int, residual: Mapping[str, torch.Tensor]) -> Path:
        plain = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in residual.items()}
        meta = {"kind": _KIND, "task": self.task, "round": str(r)}
        with atomic_path(self.path(r), mode=0o600) as tmp:
            safetensors.torch.save_file(plain, tmp, metadata=meta)
        return self.path(r)

    def load_before(
        self, r: int, template: Mapping[str, torch.Tensor]
    ) -> tuple[int, dict[str, torch.Tensor]] | None:
        """(its round, the residual) of the newest file of a round before `r`, or None when there is none.
        Raises ResidualError for a file of another task or round than its name, or of another model."""
        older = [x for x in self.rounds() if x < r]
        if not older:
            return None
        return older[-1], self.load(older[-1], template)

    def load(self, r: int, template: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        path = self.path(r)
        try:
            with safetensors.safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
        except OSError as exc:
            raise ResidualError(f"cannot read residual {path}: {exc.strerror or exc}") from exc
        except (safetensors.SafetensorError, ValueError, RuntimeError) as exc:
            raise ResidualError(f"residual {path} is corrupt or truncated: {exc}") from exc
        if meta.get("kind") != _KIND or meta.get("task") != self.task:
            raise ResidualError(
                f"residual {path} belongs to task {meta.get('task', '?')}, not {self.task}",
                hint="a state dir is per task; move the residual folder away",
            )
        if meta.get("round") != str(r):
            raise ResidualError(f"residual {path} says round {meta.get('round')!r}, its name round {r}")
        want = {n: tuple(t.shape) for n, t in template.items() if t.is_floating_point()}
        got = {n: tuple(t.shape) for n, t in state.items()}
        if got != want or any(t.dtype != torch.float32 for t in state.values()):
            raise ResidualError(f"residual {path} does not hold this model's floating tensors in float32")
        return state

    def prune(self, below: int) -> None:
        """Delete the files of rounds before `below`."""
        for x in self.rounds():
            if x < below:
                self.path(x).unlink(missing_ok=True)


class UpdateCompressor:
    """Compresses this site's update for the task's `[exchange]` settings, with error feedback for top-k."""

    def __init__(self, enc: Encoding, state_dir: Path, task_hash: bytes) -> None:
        self.enc = enc
        self.residuals = ResidualStore(Path(state_dir) / "residual", task_hash)

    def compress(self, r: int, update: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """What travels for round r's update (the update itself when nothing is compressed)."""
        if self.enc.mode != "topk":
            return compress(update, self.enc)[0]
        previous = self._previous(r, update)
        sent, residual = compress(update, self.enc, previous[1] if previous else None)
        self.residuals.save(r, residual or {})
        # Keep the residual just used: a crash before the update is stored retrains round r from it.
        self.residuals.prune(below=previous[0] if previous else r)
        return sent

    def _previous(
        self, r: int, update: Mapping[str, torch.Tensor]
    ) -> tuple[int, dict[str, torch.Tensor]] | None:
        try:
            return self.residuals.load_before(r, update)
        except ResidualError as exc:
            log.error("round %d: %s; %s; starting from a zero residual", r, type(exc).__name__, exc)
            for x in self.residuals.rounds():
                if x < r:
                    moved = quarantine(self.residuals.path(x), self.residuals.folder / "refused")
                    log.error("moved %s aside to %s", self.residuals.path(x).name, moved)
            return None
