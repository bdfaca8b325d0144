"""Exporting a merged model as a MONAI bundle ready for inference, after checking it on chain; its
provenance file names the round, the included sites and the largest epsilon behind the model."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from swarmd.checkpoint import CheckpointStore, save_file
from swarmd.config import SiteConfig
from swarmd.errors import CheckpointError, StoreError, UsageError
from swarmd.ledger import Ledger, RoundStatus
from swarmd.ops.epsilon import model_epsilon
from swarmd.task import SCAFFOLD_PREFIX, load_task


def export_bundle(cfg: SiteConfig, round_number: int, out: Path) -> Path:
    task = load_task(cfg.site.task)
    ledger = Ledger(cfg.chain.rpc_url, cfg.chain.contract, poa=cfg.chain.poa)
    if round_number < 0 or round_number > ledger.current_round():
        raise UsageError(f"round {round_number} does not exist (current round: {ledger.current_round()})")
    info = ledger.round(round_number)
    if info.status != RoundStatus.FINALIZED or info.merged_hash is None:
        raise UsageError(
            f"round {round_number} is {info.status.name.lower()}, not finalized: no merged model"
        )
    store = CheckpointStore(cfg.site.state_dir / "checkpoints")
    if not store.has(info.merged_hash):
        raise CheckpointError(
            f"this site does not hold the merged model of round {round_number} "
            f"(0x{info.merged_hash.hex()[:16]}..)",
            hint="run the export on a site whose daemon took part in or caught up to that round",
        )
    state = store.get(info.merged_hash)  # verifies the content hash on load
    variate = sorted(k for k in state if k.startswith(SCAFFOLD_PREFIX))
    for name in variate:  # SCAFFOLD's server variate is no part of the network the bundle loads
        del state[name]
    spent = model_epsilon([ledger.round(r) for r in range(round_number + 1)], round_number)
    provenance = (
        f"task {task.hash_hex}\ncontract {ledger.address}\nround {round_number}\n"
        f"merged_model 0x{info.merged_hash.hex()}\nincluded {' '.join(info.included)}\n"
        f"mode {info.mode.replace(' ', '_')}\nrecovered {' '.join(info.recovered)}\n"
        f"max_epsilon {'none' if spent.epsilon is None else f'{spent.epsilon:.3f} {spent.site}'}\n"
        f"sites_without_dp {' '.join(spent.without_dp)}\n"
        + (f"scaffold_variate_removed {len(variate)} tensors\n" if variate else "")
    )
    return write_bundle(task.bundle, state, out, provenance)


def write_bundle(bundle: Path, state: dict[str, torch.Tensor], out: Path, provenance: str) -> Path:
    """A copy of `bundle` at `out` holding `state` as models/model.safetensors (what its
    configs/inference.json loads) and SWARM_PROVENANCE.txt; written whole or not at all."""
    if out.exists():
        raise UsageError(f"{out} already exists; choose a new directory")
    tmp = out.with_name(f".{out.name}.partial")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(bundle, tmp, ignore=shutil.ignore_patterns("__pycache__", ".*"))
        models = tmp / "models"
        models.mkdir(exist_ok=True)
        # safetensors only: the bundles' inference.json loads it, and nobody is handed a pickle.
        save_file(state, models / "model.safetensors")
        (tmp / "SWARM_PROVENANCE.txt").write_text(provenance)
        tmp.rename(out)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise StoreError(f"cannot export to {out}: {exc}") from None
    return out
