"""The leader's memory while it merges N stored updates with each rule: a small, dedicated measurement.

`python -m swarmd.bench.merge_memory --sites 8` writes N perturbed copies of a model (MONAI's 2D
DenseNet121, ~7M parameters, the round bench's model) into a real checkpoint store, then, for each
rule, starts a fresh process that does what a leader does after its exchange: it holds the round's
base model, offers the stored updates (checked and accepted, as they arrive), folds them from the
store in address order (`Exchange.fold(store.open)`) and takes the result; `RssPeak` (the leader's
own sampler) records the growth of its RSS over fold + result, reported as a multiple of the model's
bytes. A fresh process per rule, so one rule's freed pages do not lower the next one's figure.

This is the merge alone, not a whole round: the exchange's receive buffers (at most two updates in
flight, `LeaderSide.limit_stalls`) come on top, and `swarm bench round` measures those with fedavg.
One update in eight is sign-flipped and scaled (x10), so Krum and the robust rules have an outlier.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

RULES = ("fedavg", "median", "trimmed_mean", "geomedian", "krum")
PARAMS: dict[str, dict[str, Any]] = {"trimmed_mean": {"trim_ratio": 0.2}, "krum": {"f": 1, "m": 1}}


def model_state(seed: int = 0) -> dict[str, torch.Tensor]:
    from monai.networks.nets import DenseNet121

    torch.manual_seed(seed)
    net = DenseNet121(spatial_dims=2, in_channels=1, out_channels=2)
    return {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}


def write_round(root: Path, sites: int) -> dict[str, Any]:
    """The base model and `sites` updates in a checkpoint store under `root`; returns their hashes."""
    from swarmd.checkpoint import CheckpointStore

    store = CheckpointStore(root / "store")
    base = model_state()
    g = torch.Generator().manual_seed(1)
    updates = {}
    for i in range(sites):
        state = {
            k: (v + 0.01 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v)
            for k, v in base.items()
        }
        if i == sites - 1:  # the outlier
            state = {k: (-10 * v if v.is_floating_point() else v) for k, v in state.items()}
        updates["0x" + f"{i + 1:040x}"] = store.put(state).hex()
        del state
    return {"base": store.put(base).hex(), "updates": updates}


def measure(root: Path, rule: str, layout: dict[str, Any]) -> dict[str, Any]:
    """In this (fresh) process: the leader's RSS growth over fold + result with `rule`."""
    from swarmd.checkpoint import CheckpointStore
    from swarmd.daemon.exchange import Exchange
    from swarmd.daemon.rss import RssPeak
    from swarmd.merge import get_rule

    store = CheckpointStore(root / "store")
    base = store.get(bytes.fromhex(layout["base"]))
    model_bytes = sum(t.numel() * t.element_size() for t in base.values())
    hashes = {a: bytes.fromhex(h) for a, h in layout["updates"].items()}
    exchange = Exchange(
        round=1,
        term=1,
        expected={a: (h, 100) for a, h in hashes.items()},
        base=base,
        rule=get_rule(rule, **PARAMS.get(rule, {})),
        is_diff=False,
    )
    for sender, h in hashes.items():
        exchange.offer(sender, store.open(h), h)
    gc.collect()
    t0 = time.perf_counter()
    with RssPeak(interval=0.005) as rss:
        exchange.fold(store.open)
        merged, included = exchange.result()
    seconds = time.perf_counter() - t0
    return {
        "rule": rule,
        "sites": len(hashes),
        "model_bytes": model_bytes,
        "rss_growth_bytes": rss.growth,
        "ratio": round(rss.growth / model_bytes, 2),
        "seconds": round(seconds, 1),
        "included": len(included),
        "merged_tensors": len(merged),
    }


def run(sites: int, rules: tuple[str, ...], workdir: Path | None = None) -> list[dict[str, Any]]:
    """One row per rule (each measured in a fresh process)."""
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        root = Path(tmp)
        layout = write_round(root, sites)
        (root / "layout.json").write_text(json.dumps(layout))
        rows = []
        for rule in rules:
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(root), "--rule", rule],
                check=True,
                capture_output=True,
                text=True,
            )
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sites", type=int, default=8)
    parser.add_argument("--rules", default=",".join(RULES))
    parser.add_argument("--rule", default="")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        layout = json.loads((args.child / "layout.json").read_text())
        print(json.dumps(measure(args.child, args.rule, layout)))
        return
    rows = run(args.sites, tuple(r for r in args.rules.split(",") if r))
    print(f"{'rule':<14}{'N':>3}{'model MB':>10}{'RSS growth MB':>15}{'x model':>9}{'seconds':>9}")
    for r in rows:
        print(
            f"{r['rule']:<14}{r['sites']:>3}{r['model_bytes'] / 1e6:>10.1f}"
            f"{r['rss_growth_bytes'] / 1e6:>15.1f}{r['ratio']:>9.2f}{r['seconds']:>9.1f}"
        )


if __name__ == "__main__":
    main()
