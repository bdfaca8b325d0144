"""`swarm bench round`: what a round costs beyond local training, with real daemons on a real anvil.

For each consortium size N it starts a `local_swarm` (anvil, instant blocks or `block_time`, N
provisioned sites), runs N `swarmd` subprocesses on 127.0.0.1 through a few rounds of the
DenseNet121 example bundle (1 local step, no evaluation), waits until every site is done, and reads
each site's journal (`Journal.read`). In the same run it measures plain ZeroMQ loopback
throughput for the model's bytes (the transport bench's plain path), which is what the overhead
goal is held against.

A round is measured as a cycle on the critical path, from the finalization of round r-1 (the
leader entering `disseminate`, i.e. its finalize transaction is mined) to that of round r. The
phase-entry times come from the daemons' journals (`RoundRecord.entered`, wall-clock seconds). The
cycle splits exactly into:

- waiting:       the last committer noticing the finalization of r-1, and the last sender noticing
                 the election (chain polling);
- dissemination: the last committer fetching and verifying the merged model, until it starts training;
- train:         that site's local training (reported apart: it is not overhead);
- chain:         its commit transaction, last commit -> leader sees the election, finalize transaction;
- exchange:      the last sender noticing the election -> the leader holds every update;
- merge:         the leader's merge.

overhead = cycle - the trainer call itself (`overhead_trainer_s`, as Flower cuts its figure: the TRAIN
phase's hashing, fsync and chain read of the update are overhead too), and beside it the older cut,
cycle - the whole TRAIN phase (`overhead_s`, which the categories above add up to). Round 0 also pays
for start-up (first model load, first iteration) and is reported but left out of the means.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from swarmd.bench.transport import plain_zmq_gbps
from swarmd.daemon.store import Journal, RoundRecord
from swarmd.errors import DaemonError
from swarmd.ops import DemoData, LocalSwarm, local_swarm, task_file
from swarmd.train import BUNDLES_DIR

MODELS = {"densenet121": "DenseNet121", "densenet264": "DenseNet264"}  # ~7M and ~30.6M parameters
CATEGORIES = ("chain", "exchange", "merge", "dissemination", "waiting")

SWARM = {
    "local_steps": 1,
    "min_peers": 2,
    "merge": "fedavg",
    "send": "weights",
    # Wide windows: every site must be in every round however long its (contended) training takes.
    "commit_window": 100000,
    "leader_timeout": 100000,
    "fanout": 2,
    "eval_every": 0,
}


DATA = DemoData(alpha=1.0, seed=5, n_per_site=16, n_test=8)


class BenchFailed(DaemonError):
    """A daemon died or the swarm did not finish in time during the round benchmark."""


def _bundle(model: str, root: Path) -> Path:
    """The example DenseNet bundle, or a copy of it whose network is `model`."""
    src = BUNDLES_DIR / "cxr_densenet"
    if model == "densenet121":
        return src
    dst = root / f"bundle-{model}"
    shutil.copytree(src, dst)
    cfg = dst / "configs/train.json"
    doc = json.loads(cfg.read_text())
    doc["network_def"]["_target_"] = MODELS[model]
    cfg.write_text(json.dumps(doc, indent=4))
    return dst


def _cycle(r: int, sites: dict[str, dict[int, RoundRecord]]) -> dict[str, Any]:
    """Split round r's cycle (finalize r-1 -> finalize r) along the critical path; see the module doc.

    `sites` holds each site's journal: when it first entered each phase of each round."""

    def enter(site: str, phase: str, rr: int = r) -> float | None:
        rec = sites[site].get(rr)
        return rec.entered.get(phase) if rec is not None else None

    def need(site: str, phase: str, rr: int = r) -> float:
        t = enter(site, phase, rr)
        if t is None:
            raise BenchFailed(f"round {rr}: {site} never entered {phase}")
        return t

    def first(phase: str, rr: int = r) -> float:
        times = [t for s in sites if (t := enter(s, phase, rr)) is not None]
        if not times:
            raise BenchFailed(f"round {rr}: no site entered {phase}")
        return min(times)

    committed = {s: t for s in sites if (t := enter(s, "elect")) is not None}
    leaders = {s: t for s in sites if (t := enter(s, "merge")) is not None}
    if not committed or not leaders:
        raise BenchFailed(f"round {r}: the journals show no complete round ({len(committed)} committers)")
    leader = min(leaders, key=lambda s: leaders[s])  # after a failover: the first to merge
    fin = first("disseminate")
    last = max(committed, key=lambda s: committed[s])
    c_train, c_commit, c_elect = need(last, "train"), need(last, "commit"), committed[last]
    e_exchange, x_merge, m_final = need(leader, "exchange"), leaders[leader], need(leader, "finalize")
    senders = [t for s in sites if s != leader and (t := enter(s, "exchange")) is not None]
    noticed = min(max(senders, default=e_exchange), x_merge)
    parts = {
        "train": c_commit - c_train,
        "commit": c_elect - c_commit,
        "elect": e_exchange - c_elect,
        "exchange_wait": max(0.0, noticed - e_exchange),
        "exchange": x_merge - max(noticed, e_exchange),
        "merge": m_final - x_merge,
        "finalize": fin - m_final,
    }
    if r == 0:
        start = first("sync", 0)
        parts["startup"] = c_train - start
        cycle_start = start
    else:
        prev_fin = first("disseminate", r - 1)
        seen = enter(last, "disseminate", r - 1) or prev_fin
        parts["finalize_wait"] = max(0.0, seen - prev_fin)
        parts["dissemination"] = c_train - max(seen, prev_fin)
        cycle_start = prev_fin
    cycle = fin - cycle_start
    trainer = sites[last][r].train_seconds or parts["train"]
    categories = {
        "chain": parts["commit"] + parts["elect"] + parts["finalize"],
        "exchange": parts["exchange"],
        "merge": parts["merge"],
        "dissemination": parts.get("dissemination", parts.get("startup", 0.0)),
        "waiting": parts["exchange_wait"] + parts.get("finalize_wait", 0.0),
    }
    return {
        "round": r,
        "leader": leader,
        "last_committer": last,
        "cycle_s": round(cycle, 3),
        "train_s": round(parts["train"], 3),
        # The trainer's own seconds for that site's training (the rest of `train_s` is persisting,
        # and under secure aggregation masking): `swarm bench secagg` moves the rest into overhead.
        "trainer_s": round(trainer, 3),
        "overhead_s": round(cycle - parts["train"], 3),
        "overhead_trainer_s": round(cycle - trainer, 3),
        "categories": {k: round(v, 3) for k, v in categories.items()},
        "parts": {k: round(v, 3) for k, v in parts.items()},
    }


def _run_size(
    n: int,
    *,
    model: str,
    rounds: int,
    block_time: float | None,
    note: Callable[[str], None],
    keep_logs: Path | None,
    privacy: Mapping[str, Any] | None = None,
    probe: Callable[[LocalSwarm], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One size's row (`_summarize`). `privacy`: the task's [privacy] table; `probe` reads the running
    swarm once every site is done, just before it stops, and its keys are added to the row."""
    root = Path(tempfile.mkdtemp(prefix="swb-", dir="/tmp"))  # unix socket paths must stay short
    tag = "-secagg" if privacy and privacy.get("secure_aggregation") else ""
    try:
        task = bench_task(root, model, rounds, privacy)
        note(f"N={n} {model}{tag}: devnet and {n} sites")
        with local_swarm(root, task, sites=n, block_time=block_time, data=DATA, start=False) as swarm:
            t0 = time.perf_counter()
            swarm.start()
            _wait_done(swarm, n, rounds, t0, note)
            wall = time.perf_counter() - t0
            probed = probe(swarm) if probe is not None else {}
        journals = {s.name: Journal.read(s.journal).rounds for s in swarm.consortium.sites}
        if keep_logs is not None:
            name = f"{model}-n{n}{tag}" + ("" if block_time is None else f"-block{block_time:g}")
            copy_logs(swarm, keep_logs / name)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {**_summarize(n, model, rounds, wall, journals, note), **probed}


def bench_task(
    root: Path,
    model: str,
    rounds: int,
    privacy: Mapping[str, Any] | None = None,
    exchange: Mapping[str, Any] | None = None,
    swarm: Mapping[str, Any] | None = None,
) -> Path:
    """The round bench's swarm.toml in `root`: `model`'s bundle, SWARM (with `swarm` over it), `rounds`
    rounds, `privacy`, `exchange`."""
    return task_file(
        root / "swarm.toml",
        name=f"bench-round-{model}",
        bundle=_bundle(model, root),
        seed=11,
        swarm={"rounds": rounds, **SWARM, **(swarm or {})},
        privacy=privacy,
        exchange=exchange,
    )


def copy_logs(swarm: LocalSwarm, dest: Path) -> None:
    """Every site's log and journal into dest/<site>/."""
    for s in swarm.consortium.sites:
        (dest / s.name).mkdir(parents=True, exist_ok=True)
        for src in (s.config.parent / "swarmd.log", s.journal):
            if src.exists():
                shutil.copy2(src, dest / s.name / ("journal.json" if src == s.journal else src.name))


def _summarize(
    n: int,
    model: str,
    rounds: int,
    wall: float,
    journals: dict[str, dict[int, RoundRecord]],
    note: Callable[[str], None],
) -> dict[str, Any]:
    """One size's row: the cycles split along the critical path, leader memory, the ZeroMQ baseline."""
    cycles = [_cycle(r, journals) for r in range(rounds)]
    led: list[tuple[int, RoundRecord]] = [
        (r, rec) for j in journals.values() for r, rec in j.items() if rec.led and rec.model_bytes
    ]
    model_bytes = max(rec.model_bytes for _, rec in led)
    rss = [
        {
            "round": r,
            "growth_bytes": rec.leader_rss_growth,
            "ratio": round(rec.leader_rss_growth / model_bytes, 2),
        }
        for r, rec in sorted(led, key=lambda x: x[0])
    ]
    note(f"N={n} {model}: plain ZeroMQ baseline")
    gbps = plain_zmq_gbps(model_bytes // 4, reps=3)  # the transport bench's baseline path
    steady = cycles[1:] or cycles
    mean_overhead = statistics.fmean(c["overhead_s"] for c in steady)
    mean_trainer_cut = statistics.fmean(c["overhead_trainer_s"] for c in steady)
    transfer_s = n * model_bytes / (gbps * 1e9)
    phase_means = {
        phase: round(
            statistics.fmean(
                rec.phases.get(phase, 0.0)
                for j in journals.values()
                for r, rec in j.items()
                if r >= 1 or rounds == 1
            ),
            3,
        )
        for phase in ("sync", "train", "commit", "elect", "exchange", "merge", "finalize", "disseminate")
    }
    return {
        "sites": n,
        "model": model,
        "model_bytes": model_bytes,
        "params_m": round(model_bytes / 4 / 1e6, 2),
        "rounds": rounds,
        "wall_s": round(wall, 1),
        "cycles": cycles,
        "steady_rounds": [c["round"] for c in steady],
        "overhead_s": round(mean_overhead, 3),
        "overhead_trainer_s": round(mean_trainer_cut, 3),
        "trainer_s": round(statistics.fmean(c["trainer_s"] for c in steady), 3),
        "cycle_s": round(statistics.fmean(c["cycle_s"] for c in steady), 3),
        "train_s": round(statistics.fmean(c["train_s"] for c in steady), 3),
        "categories": {k: round(statistics.fmean(c["categories"][k] for c in steady), 3) for k in CATEGORIES},
        "plain_zmq_gbps": gbps,
        "n_models_transfer_s": round(transfer_s, 4),
        "overhead_vs_transfer": round(mean_overhead / transfer_s, 1),
        "leader_rss": rss,
        "leader_rss_ratio_max": max(x["ratio"] for x in rss),
        "site_phase_means_s": phase_means,
        "train_seconds_journal": round(
            statistics.fmean(
                rec.train_seconds for j in journals.values() for rec in j.values() if rec.train_seconds
            ),
            3,
        ),
    }


def _wait_done(swarm: LocalSwarm, n: int, rounds: int, t0: float, note: Callable[[str], None]) -> None:
    def progress(sts: list[dict[str, Any] | None]) -> None:
        phases = [st["phase"] if st else "starting" for st in sts]
        rnd = min((st["round"] for st in sts if st), default=0)
        note(
            f"N={n}: round {rnd}/{rounds}, {phases.count('done')}/{n} done, {time.perf_counter() - t0:.0f} s"
        )

    # On 2 cores N daemons train one after another: allow generously for contention.
    try:
        swarm.wait_done(120 + rounds * n * 40, interval=1.0, on_poll=progress)
    except DaemonError as exc:
        raise BenchFailed(f"{exc}\n{swarm.tails(15)}") from None


def run_round_bench(
    sizes: tuple[int, ...] = (3, 5, 8),
    quick: bool = False,
    block_time: float | None = None,
    *,
    rounds: int = 4,
    models: tuple[str, ...] = ("densenet121",),
    on_step: Callable[[str], None] | None = None,
    keep_logs: Path | None = None,
) -> dict[str, Any]:
    """Round overhead, its breakdown and the leader's memory for each N (and model); see the module doc.

    `keep_logs`: a folder to copy every site's log and journal into, to check the numbers against."""
    if quick:
        sizes, rounds, models = sizes[:1], 2, models[:1]
    note = on_step or (lambda msg: None)
    rows = [
        _run_size(n, model=m, rounds=rounds, block_time=block_time, note=note, keep_logs=keep_logs)
        for m in models
        for n in sizes
    ]
    return {
        "bench": "round",
        "block_time": block_time,
        "cores": os.cpu_count(),
        "sizes": list(sizes),
        "models": list(models),
        "rounds": rounds,
        "local_steps": 1,
        "rows": rows,
        "notes": _notes(rows),
    }


def _notes(rows: list[dict[str, Any]]) -> list[str]:
    notes = []
    for row in rows:
        cats = row["categories"]
        top = max(cats, key=lambda k: cats[k])
        notes.append(
            f"N={row['sites']} {row['model']}: overhead {row['overhead_trainer_s']:.2f} s per round "
            f"(cycle - trainer call; {row['overhead_s']:.2f} s without the whole TRAIN phase), "
            f"{row['overhead_trainer_s'] / row['n_models_transfer_s']:.1f}x the time to move N models over "
            "plain ZeroMQ "
            f"({row['n_models_transfer_s'] * 1000:.0f} ms); largest part: {top} ({cats[top]:.2f} s)."
        )
    cores = os.cpu_count() or 1
    big = [r for r in rows if r["sites"] > cores]
    if big:
        notes.append(
            f"{cores} cores for up to {max(r['sites'] for r in big)} daemons: sites train and merge on "
            "shared cores, so training time and every CPU-bound part of the overhead grow with N here "
            "for reasons a real deployment (one machine per site) does not have."
        )
    return notes
