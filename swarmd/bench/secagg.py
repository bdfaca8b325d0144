"""`swarm bench secagg`: what secure aggregation costs a round, plain and masked runs side by side.

For each N it runs the round bench (`swarmd.bench.round._run_size`: real daemons, a real anvil, the
DenseNet121 bundle, 1 local step) twice in a row, once plain and once with `[privacy]
secure_aggregation = true`, and compares the two runs:

- bytes on the wire: each daemon's `swarmd_transport_bytes_total{direction="out"}` (every ZeroMQ frame
  it sent: updates, model fetches, announces, and under secure aggregation the share and unmask
  messages), scraped from its metrics endpoint once every site is done, just before the swarm stops.
  The counters already exist and cover every message, where a per-round journal field would need a
  daemon change and would still miss what a site sends outside its own round (serving a model). Both
  runs do the same number of rounds, so the run's total / rounds is a round's bytes, and the ratio of
  totals is the ratio per round. The chain part is counted apart: every round transaction (advertise,
  commit, elect, finalize) read back from anvil's blocks, with its signed size;
- round overhead: the round bench's critical-path cycle, except that `train` is the trainer's own
  seconds (journal `train_seconds`) and the rest of the last committer's TRAIN phase, up to its commit,
  is overhead, category `mask`: in the plain run persisting the update, under secure aggregation also
  waiting for every member's keys, sending shares and masking. The advertise transaction (before
  training) falls into `dissemination`, the unmask requests into `merge`;
- leader memory: the journal's `leader_rss_growth / model_bytes`, as the round bench reads it.

A dropout run follows (`swarmd.bench.secagg_dropout`): N = 8, two sites SIGKILLed after their masked
update reached the leader; the round must finalize with the FedAvg sum.
"""

from __future__ import annotations

import os
import statistics
import time
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from swarmd.bench.round import CATEGORIES, BenchFailed, _run_size
from swarmd.config import load_config
from swarmd.ops import LocalSwarm

SECURE = {"secure_aggregation": True}
SECAGG_CATEGORIES = (*CATEGORIES, "mask")
ROUND_TXS = ("advertise", "commit", "elect", "reelect", "finalize")
MIRROR_S = 2.5  # the daemon mirrors its transport counters into prometheus every 2 s


# --- probes of a running swarm ------------------------------------------------------------------
def scrape_bytes(swarm: LocalSwarm) -> dict[str, Any]:
    """Every daemon's transport byte counters from its /metrics endpoint: {"in", "out", "sites"}."""
    time.sleep(MIRROR_S)
    sites: dict[str, dict[str, int]] = {}
    for s in swarm.consortium.sites:
        bind = load_config(s.config).metrics.bind
        try:
            with urllib.request.urlopen(f"http://{bind}/metrics", timeout=10) as resp:
                text = resp.read().decode()
        except OSError as exc:
            raise BenchFailed(f"cannot scrape {s.name}'s metrics on {bind}: {exc}") from None
        sites[s.name] = transport_bytes(text)
    return {
        "in": sum(v["in"] for v in sites.values()),
        "out": sum(v["out"] for v in sites.values()),
        "sites": sites,
    }


def transport_bytes(text: str) -> dict[str, int]:
    """{"in": n, "out": n} from a prometheus exposition (0 for a direction not counted yet)."""
    out = {"in": 0, "out": 0}
    for family in text_string_to_metric_families(text):
        if family.name != "swarmd_transport_bytes":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.labels.get("direction") in out:
                out[sample.labels["direction"]] = int(sample.value)
    return out


def chain_txs(swarm: LocalSwarm) -> dict[str, dict[str, int]]:
    """Every round transaction sent to the ledger so far, by function: {"count", "bytes"} (signed size)."""
    w3, contract = swarm.ledger.w3, swarm.ledger.contract
    out: dict[str, dict[str, int]] = {}
    for n in range(w3.eth.block_number + 1):
        for tx in w3.eth.get_block(n, full_transactions=True)["transactions"]:
            if not isinstance(tx, Mapping):
                continue  # a bare hash: full_transactions was not honoured
            data = bytes(tx["input"])
            if tx.get("to") != contract.address or len(data) < 4:
                continue
            try:
                fn = contract.get_function_by_selector(data[:4]).fn_name
            except ValueError:
                continue
            if fn in ROUND_TXS:
                row = out.setdefault(fn, {"count": 0, "bytes": 0})
                row["count"] += 1
                row["bytes"] += len(w3.eth.get_raw_transaction(tx["hash"]))
    return out


def probe(swarm: LocalSwarm) -> dict[str, Any]:
    return {"transport_bytes": scrape_bytes(swarm), "chain_txs": chain_txs(swarm)}


# --- one size: plain and secure -----------------------------------------------------------------
def resplit(row: dict[str, Any]) -> dict[str, Any]:
    """`row` with the last committer's non-training time of its TRAIN phase moved into overhead (`mask`)
    and the steady-state means taken again; per-round bytes from the probe's counters."""
    cycles = []
    for c in row["cycles"]:
        mask = round(max(0.0, c["train_s"] - c["trainer_s"]), 3)
        cycles.append(
            {
                **c,
                "train_s": round(c["train_s"] - mask, 3),
                "overhead_s": round(c["overhead_s"] + mask, 3),
                "categories": {**c["categories"], "mask": mask},
            }
        )
    steady = [c for c in cycles if c["round"] in row["steady_rounds"]]
    rounds = row["rounds"]
    chain = row["chain_txs"]
    return {
        **row,
        "cycles": cycles,
        "overhead_s": round(statistics.fmean(c["overhead_s"] for c in steady), 3),
        "train_s": round(statistics.fmean(c["train_s"] for c in steady), 3),
        "categories": {
            k: round(statistics.fmean(c["categories"][k] for c in steady), 3) for k in SECAGG_CATEGORIES
        },
        "wire_bytes_per_round": round(row["transport_bytes"]["out"] / rounds),
        "chain_bytes_per_round": round(sum(v["bytes"] for v in chain.values()) / rounds),
        "chain_txs_per_round": round(sum(v["count"] for v in chain.values()) / rounds, 2),
    }


def compare(plain: dict[str, Any], secure: dict[str, Any]) -> dict[str, Any]:
    """One size's comparison: the two runs' rows and the ratios the goals are held against."""
    n = plain["sites"]
    wire = (secure["wire_bytes_per_round"], plain["wire_bytes_per_round"])
    with_chain = (
        secure["wire_bytes_per_round"] + secure["chain_bytes_per_round"],
        plain["wire_bytes_per_round"] + plain["chain_bytes_per_round"],
    )
    return {
        "sites": n,
        "model_bytes": secure["model_bytes"],
        "bytes_ratio": round(wire[0] / wire[1], 4),
        "bytes_with_chain_ratio": round(with_chain[0] / with_chain[1], 4),
        "extra_wire_bytes_per_round": wire[0] - wire[1],
        "extra_chain_bytes_per_round": secure["chain_bytes_per_round"] - plain["chain_bytes_per_round"],
        "overhead_ratio": round(secure["overhead_s"] / plain["overhead_s"], 3),
        "extra_overhead_s": {
            k: round(secure["categories"][k] - plain["categories"][k], 3) for k in SECAGG_CATEGORIES
        },
        "leader_rss_ratio_max": secure["leader_rss_ratio_max"],
        "plain": plain,
        "secure": secure,
    }


def pool(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One mode's repeated runs at one N as one row: every run's steady cycles averaged together,
    bytes per round averaged, the leader's worst memory ratio."""
    if len(rows) == 1:
        return rows[0]
    cycles = [{**c, "run": i} for i, row in enumerate(rows) for c in row["cycles"]]
    steady = [c for c in cycles if c["round"] in rows[c["run"]]["steady_rounds"]]

    def mean(key: str) -> float:
        return round(statistics.fmean(row[key] for row in rows), 3)

    return {
        **rows[0],
        "runs": len(rows),
        "cycles": cycles,
        "wall_s": round(sum(row["wall_s"] for row in rows), 1),
        "overhead_s": round(statistics.fmean(c["overhead_s"] for c in steady), 3),
        "cycle_s": round(statistics.fmean(c["cycle_s"] for c in steady), 3),
        "train_s": round(statistics.fmean(c["train_s"] for c in steady), 3),
        "categories": {
            k: round(statistics.fmean(c["categories"][k] for c in steady), 3) for k in SECAGG_CATEGORIES
        },
        "leader_rss": [x for row in rows for x in row["leader_rss"]],
        "leader_rss_ratio_max": max(row["leader_rss_ratio_max"] for row in rows),
        "wire_bytes_per_round": round(mean("wire_bytes_per_round")),
        "chain_bytes_per_round": round(mean("chain_bytes_per_round")),
        "chain_txs_per_round": mean("chain_txs_per_round"),
        "transport_bytes": [row["transport_bytes"] for row in rows],
        "chain_txs": [row["chain_txs"] for row in rows],
    }


def run_pair(
    n: int,
    *,
    rounds: int,
    repeats: int,
    note: Callable[[str], None],
    keep_logs: Path | None,
    model: str = "densenet121",
) -> dict[str, Any]:
    """Plain and secure runs at N = n, `repeats` of each in ABBA order (plain first, then secure
    first, ...) so that a drift in the machine's load falls on both; see `compare`."""
    rows: dict[str, list[dict[str, Any]]] = {"plain": [], "secure": []}
    for rep in range(repeats):
        order = ("plain", "secure") if rep % 2 == 0 else ("secure", "plain")
        for mode in order:
            row = _run_size(
                n,
                model=model,
                rounds=rounds,
                block_time=None,
                note=note,
                keep_logs=keep_logs / f"run{rep}" if keep_logs is not None and repeats > 1 else keep_logs,
                privacy=SECURE if mode == "secure" else None,
                probe=probe,
            )
            rows[mode].append(resplit(row))
    return compare(pool(rows["plain"]), pool(rows["secure"]))


def run_secagg_bench(
    sizes: tuple[int, ...] = (3, 5, 8),
    quick: bool = False,
    *,
    rounds: int = 4,
    repeats: int = 2,
    dropout: tuple[int, int] | None = (8, 2),
    on_step: Callable[[str], None] | None = None,
    keep_logs: Path | None = None,
) -> dict[str, Any]:
    """Plain against secure aggregation at each N, then the dropout run (N, killed); see the module doc.

    `repeats`: runs of each mode per N (ABBA order). `quick`: N = 3, 2 rounds, one run of each mode,
    and 1 of 3 sites killed."""
    from swarmd.bench.secagg_dropout import run_dropout

    if quick:
        sizes, rounds, repeats, dropout = sizes[:1], 2, 1, (3, 1) if dropout else None
    note = on_step or (lambda msg: None)
    pairs = [run_pair(n, rounds=rounds, repeats=repeats, note=note, keep_logs=keep_logs) for n in sizes]
    drop = run_dropout(*dropout, note=note, keep_logs=keep_logs) if dropout else None
    return {
        "bench": "secagg",
        "cores": os.cpu_count(),
        "sizes": list(sizes),
        "rounds": rounds,
        "repeats": repeats,
        "local_steps": 1,
        "pairs": pairs,
        "dropout": drop,
    }
