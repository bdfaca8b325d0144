"""`swarm bench secagg`'s dropout run: sites SIGKILLed after their masked update reached the leader.

A secure swarm (the round bench's task and data) runs until a round is elected in which a non-leader
committer has not started sending yet: that site is SIGSTOPped (the holdout), so the leader cannot
start unmasking; `kill` other non-leader committers are SIGKILLed as soon as their journals show
their masked update delivered (`delivered_term`), then the holdout is resumed. The leader must recover
the dead sites' self-masks from the survivors' shares and finalize with their inputs in the sum:
the merged model is compared with the sample-weighted mean of the committers' plain updates (each
read from its site's store through its journal's `plain_hash`), which it must match within the
fixed-point step (as `tests/e2e/test_secure_aggregation.py` checks).
"""

from __future__ import annotations

import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from swarmd.bench.round import DATA, BenchFailed, bench_task, copy_logs
from swarmd.bench.secagg import SECURE
from swarmd.daemon.store import Journal, ModelStore, RoundRecord
from swarmd.errors import DaemonError
from swarmd.ledger import RoundInfo, RoundStatus
from swarmd.ops import LocalSwarm, local_swarm, wait_until
from swarmd.ops.consortium import LocalSite
from swarmd.privacy import SecAggParams
from swarmd.task import PrivacySettings


def _record(site: LocalSite, r: int) -> RoundRecord | None:
    return Journal.read(site.journal).rounds.get(r)


def _delivered(site: LocalSite, r: int) -> bool:
    rec = _record(site, r)
    return rec is not None and rec.delivered_term >= 0


def _round_when(swarm: LocalSwarm, r: int, ok: Callable[[RoundInfo], bool], what: str) -> RoundInfo:
    """Round r's info, polled until `ok` holds for it (DaemonError after 300 s)."""
    found: list[RoundInfo] = []

    def check() -> bool:
        if swarm.ledger.current_round() < r:
            return False
        info = swarm.ledger.round(r)
        found[:] = [info]
        return ok(info)

    wait_until(check, 300, interval=0.05, what=what)
    return found[0]


def _signal(swarm: LocalSwarm, site: LocalSite, sig: signal.Signals) -> None:
    proc = swarm.daemon(site.address).proc
    if proc is not None and proc.poll() is None:
        proc.send_signal(sig)


def _hold(swarm: LocalSwarm, r: int, kill: int) -> tuple[RoundInfo, LocalSite, list[LocalSite]] | None:
    """In elected round r, SIGSTOP a non-leader committer that has not begun its exchange; returns
    (round info, holdout, victims), or None (everything resumed) when no such committer was caught."""
    info = _round_when(swarm, r, lambda i: i.status != RoundStatus.OPEN, f"round {r}'s election")
    committers = {c.site for c in info.commits}
    others = [s for s in swarm.consortium.sites if s.address != info.leader and s.address in committers]
    if info.status != RoundStatus.ELECTED or len(others) < kill + 1:
        return None
    for holdout in others:
        _signal(swarm, holdout, signal.SIGSTOP)
        rec = _record(holdout, r)
        if rec is None or "exchange" not in rec.entered:
            return info, holdout, [s for s in others if s is not holdout][:kill]
        _signal(swarm, holdout, signal.SIGCONT)
    return None


def _check_sum(swarm: LocalSwarm, info: RoundInfo) -> dict[str, float]:
    """The merged model against the sample-weighted mean of the included committers' plain updates."""
    sites = {s.address: s for s in swarm.consortium.sites}

    def store(site: LocalSite) -> ModelStore:
        return ModelStore(site.config.parent / "state" / "checkpoints")

    n = {c.site: c.n_samples for c in info.commits if c.site in info.included}
    plain = {}
    for a in n:
        rec = _record(sites[a], info.round)
        if rec is None or rec.plain_hash is None:
            raise BenchFailed(f"round {info.round}: {sites[a].name}'s journal has no plain update")
        plain[a] = store(sites[a]).get(rec.plain_hash)
    if info.merged_hash is None:
        raise BenchFailed(f"round {info.round} finalized without a merged model")
    merged = store(sites[info.leader or ""]).get(info.merged_hash)
    total = sum(n.values())
    params = SecAggParams.from_settings(PrivacySettings(secure_aggregation=True))  # == SECURE
    step = len(n) / (params.scale * total)  # each site's rounding is half a step, weighted by n_i
    err = 0.0
    for name, m in merged.items():
        if m.dtype.is_floating_point:
            want = sum(plain[a][name].double() * n[a] for a in n) / total
            err = max(err, float((m.double() - want).abs().max()))
    return {"max_abs_error": err, "step": step, "error_over_step": round(err / step, 4)}


def _drop(swarm: LocalSwarm, kill: int, rounds: int, note: Callable[[str], None]) -> dict[str, Any]:
    for r in range(1, rounds):
        note(f"dropout: waiting for round {r}'s election")
        held = _hold(swarm, r, kill)
        if held is not None:
            break
    else:
        raise BenchFailed("never caught a committer before it sent its update")
    info, holdout, victims = held
    try:
        for v in victims:
            wait_until(partial(_delivered, v, r), 180, 0.05, f"{v.name}'s masked update to reach the leader")
            _signal(swarm, v, signal.SIGKILL)
            swarm.daemon(v.address).proc.wait()  # type: ignore[union-attr]
        note(f"dropout: killed {', '.join(v.name for v in victims)}; resuming {holdout.name}")
    finally:
        _signal(swarm, holdout, signal.SIGCONT)
    t0 = time.perf_counter()
    final = _round_when(
        swarm, r, lambda i: i.status == RoundStatus.FINALIZED, f"round {r} to finalize without the killed"
    )
    names = {s.address: s.name for s in swarm.consortium.sites}
    return {
        "round": r,
        "leader": names[info.leader or ""],
        "holdout": holdout.name,
        "killed": [v.name for v in victims],
        "committers": len(info.commits),
        "finalize_after_resume_s": round(time.perf_counter() - t0, 2),
        "included": sorted(names[a] for a in final.included),
        "killed_included": all(v.address in final.included for v in victims),
        "recovered": sorted(names.get(a, a) for a in final.recovered),
        **_check_sum(swarm, final),
    }


def run_dropout(
    n: int, kill: int, *, note: Callable[[str], None], keep_logs: Path | None, rounds: int = 3
) -> dict[str, Any]:
    """The dropout run at N = n with `kill` sites SIGKILLed; see the module doc."""
    root = Path(tempfile.mkdtemp(prefix="swb-", dir="/tmp"))
    try:
        task = bench_task(root, "densenet121", rounds, SECURE)
        note(f"dropout N={n}: devnet and {n} sites")
        with local_swarm(root, task, sites=n, data=DATA) as swarm:
            try:
                result = _drop(swarm, kill, rounds, note)
            except DaemonError as exc:
                raise BenchFailed(f"{exc}\n{swarm.tails(15)}") from None
            finally:
                if keep_logs is not None:
                    copy_logs(swarm, keep_logs / f"dropout-n{n}-kill{kill}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {"sites": n, "kill": kill, **result}
