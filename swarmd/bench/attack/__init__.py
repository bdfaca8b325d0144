"""`swarm bench attack`: two goals of issue 11 (hardening), measured against real daemons on a real anvil.

One `local_swarm` of 4 provisioned sites on instant blocks: 3 `swarmd` subprocesses and one member
driven from this process, the attacker. The attacker never commits, so it is never drawn as a leader
and every round has the same 3 honest committers; `min_peers = 3` and `commit_window = 1` make the
election wait for those three and not a block longer (it would otherwise wait for the attacker's
commit). The DenseNet121 example bundle, 1 local step, no evaluation, `fanout = 3` (every other
member), as in `swarm bench round`.

**Flood.** Round 0 is a warm-up (start-up, first model load), rounds 1..K are clean and rounds
K+1..2K are flooded, in that order, so a flood that outlasts its round spills only into another
flooded round. The attacker watches the chain (every 20 ms, in every round alike) and, as soon as a
flooded round is elected, sends 10,000 malformed control frames to its leader over the CURVE
connection of its member key, made beforehand: garbage, random bytes, nested arrays, announces of
unknown hashes, and one frame in 25 expensive (60,000 nested empty arrays, an oversize ping, a
5,000-tensor manifest, an invalid one). Each round's cycle (finalization of r-1 to that of r) comes
from the daemons' journals and is split as in `swarmd.bench.round`; the goal is held against the
worst flooded round over the mean clean round, and every honest committer must be `included` on
chain in every flooded round.

**Stranger.** When every daemon is done (idle, still serving), a stranger sends 16 MiB frames to
each port of site-a for a while: the control port (ZeroMQ with a fresh CURVE key, a raw ZMTP greeting
followed by a 16 MiB frame, raw bytes), the bulk port (ZeroMQ without a login, with a made-up PLAIN
login, raw ZMTP) and the Prometheus port (an HTTP POST with a 16 MiB body), one vector after
another. Meanwhile a member (the attacker's key, in its own process) pings the daemon every 20 ms.
Peak RSS growth is the kernel's high-water mark (`VmHWM`, reset through `/proc/PID/clear_refs`
before each vector) minus the RSS at the reset, cross-checked by sampling RSS every 5 ms; the ping
delay is the largest round trip during the vectors minus the median one before them (a ping not
answered within 1 s counts as 1 s).
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from swarmd.ledger import Member, RoundInfo
    from swarmd.ops import LocalSite, LocalSwarm
    from swarmd.ops.launcher import DaemonProcess
from swarmd.bench.attack.common import (
    FLOOD_FRAMES,
    MIB,
    PARALLEL,
    PING_DELAY_LIMIT_MS,
    PING_INTERVAL,
    PING_TIMEOUT,
    RATIO_LIMIT,
    RSS_LIMIT_MIB,
    STRANGER_FRAME,
    SWARM,
    WATCH_INTERVAL,
    BenchFailed,
)
from swarmd.bench.attack.member import (
    Attacker,
    Dealer,
    QuietMember,
    _rejections,
    flood_frames,
)
from swarmd.bench.attack.report import (
    _flood_cell,
    _parallel_line,
    _span,
    attack_goals,
    attack_notes,
    attack_report,
    format_tables,
)
from swarmd.bench.attack.stranger import (
    RssSampler,
    _bulk_port,
    _parallel,
    _pings,
    _proc_bytes,
    _reset_peak,
    _send_raw,
    _send_zmq,
    _vector,
    _vectors,
    _zmtp_greeting,
    pinger,
    stranger_attack,
)


# --- the run ----------------------------------------------------------------------------------------
def run_attack_bench(
    quick: bool = False,
    *,
    rounds_each: int = 4,
    on_step: Callable[[str], None] | None = None,
    keep_logs: Path | None = None,
) -> dict[str, Any]:
    """Clean and flooded rounds, then a stranger's frames; see the module doc."""
    from swarmd.config import load_config
    from swarmd.daemon.site import site_identity
    from swarmd.daemon.store import Journal
    from swarmd.ledger import Ledger
    from swarmd.ops import DemoData, local_swarm, task_file
    from swarmd.train import BUNDLES_DIR
    from swarmd.transport.messages import PROTOCOL_VERSION

    each = 2 if quick else rounds_each
    rounds = 1 + 2 * each
    clean, flooded = list(range(1, 1 + each)), list(range(1 + each, rounds))
    note = on_step or (lambda msg: None)
    root = Path(tempfile.mkdtemp(prefix="swa-", dir="/tmp"))  # unix socket paths must stay short
    t0 = time.perf_counter()
    try:
        task = task_file(
            root / "swarm.toml",
            name="bench-attack",
            bundle=BUNDLES_DIR / "cxr_densenet",
            seed=11,
            swarm={"rounds": rounds, **SWARM},
        )
        note("devnet and 4 sites (3 daemons, 1 attacker)")
        data = DemoData(alpha=1.0, seed=5, n_per_site=16, n_test=8)
        with local_swarm(root, task, sites=4, data=data, start=False) as swarm:
            honest, atk_site = swarm.consortium.sites[:3], swarm.consortium.sites[3]
            daemons = swarm.daemons[:3]
            for d in daemons:
                d.start()
            cfg = load_config(atk_site.config)
            ident = site_identity(cfg)
            keys = (ident.curve.public, ident.curve.secret)
            members = {m.account: m for m in swarm.ledger.active_members()}
            metrics = {s.address: load_config(s.config).metrics.bind for s in honest}
            me = members[atk_site.address]
            quiet = _start_quiet(cfg.transport.bind, keys, [m for m in members.values() if m is not me])
            deadline = time.monotonic() + 120 + rounds * 3 * 40
            attacker = Attacker(
                Ledger(swarm.devnet.rpc_url, swarm.consortium.contract),
                rounds,
                flooded,
                {s.address: (members[s.address].endpoint, members[s.address].curve_key) for s in honest},
                keys,
                metrics,
                PROTOCOL_VERSION,
                deadline,
            )
            attacker.start()
            try:
                _wait_done(swarm, daemons, rounds, deadline, t0, note)
                attacker.join(15)
                for f in attacker.floods.values():
                    f["rejections_after"] = _rejections(metrics[f["leader"]])
            finally:
                if not attacker.is_alive():
                    attacker.close()
            rounds_wall = time.perf_counter() - t0
            infos = [swarm.ledger.round(r) for r in range(rounds)]
            journals = {s.name: Journal.read(s.journal).rounds for s in honest}
            note("a stranger's 16 MiB frames at site-a, a member pinging it")
            target = honest[0]
            stranger = stranger_attack(
                daemons[0], members[target.address], metrics[target.address], keys, 1.0 if quick else 2.0
            )
            alive = [d.name for d in daemons if d.alive()]
            quiet.stop()
            if keep_logs is not None:
                _keep(honest, keep_logs)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    names = {s.address: s.name for s in swarm.consortium.sites}
    return summarize(
        clean=clean,
        flooded=flooded,
        infos=infos,
        journals=journals,
        attacker=attacker,
        names=names,
        stranger=stranger,
        alive=alive,
        wall=rounds_wall,
        attacker_name=atk_site.name,
    )


def _start_quiet(bind: str, keys: tuple[bytes, bytes], others: list[Member]) -> QuietMember:
    """The attacker's own node at its registered endpoint: it answers announces, leads nothing."""
    quiet = QuietMember(bind, keys, {m.curve_key: m.endpoint for m in others})
    quiet.start()
    quiet.ready.wait(30)
    if quiet.error:
        raise BenchFailed(f"the attacker's node did not start: {quiet.error}")
    return quiet


def _keep(sites: Sequence[LocalSite], dest: Path) -> None:
    for s in sites:
        (dest / s.name).mkdir(parents=True, exist_ok=True)
        shutil.copy2(s.config.parent / "swarmd.log", dest / s.name / "swarmd.log")
        shutil.copy2(s.journal, dest / s.name / "journal.json")


def _wait_done(
    swarm: LocalSwarm,
    daemons: list[DaemonProcess],
    rounds: int,
    deadline: float,
    t0: float,
    note: Callable[[str], None],
) -> None:
    """Until each of `daemons` reports phase `done`; BenchFailed when one exits or at `deadline`."""
    while time.monotonic() < deadline:
        dead = [d for d in daemons if not d.alive()]
        if dead:
            raise BenchFailed(f"daemon {dead[0].name} exited; its log ends:\n{dead[0].tail(60)}")
        sts = [d.status() for d in daemons]
        phases = [st["phase"] if st else "starting" for st in sts]
        rnd = min((st["round"] for st in sts if st), default=0)
        note(f"round {rnd}/{rounds}, {phases.count('done')}/3 done, {time.perf_counter() - t0:.0f} s")
        if all(p == "done" for p in phases):
            return
        time.sleep(1.0)
    raise BenchFailed(f"the swarm did not finish {rounds} rounds in time\n{swarm.tails(15)}")


def summarize(
    *,
    clean: list[int],
    flooded: list[int],
    infos: list[RoundInfo],
    journals: dict[str, Any],
    attacker: Attacker,
    names: dict[str, str],
    stranger: dict[str, Any],
    alive: list[str],
    wall: float,
    attacker_name: str,
) -> dict[str, Any]:
    """The result: each round's cycle, chain facts and flood, the flood ratio, the stranger's figures."""
    from swarmd.bench.round import _cycle

    def site(account: str | None) -> str:
        return names.get(account or "", account or "-")

    rows = []
    for info in infos:
        r = info.round
        c = _cycle(r, journals)
        committers = [site(a) for a in info.committers]
        included = [site(a) for a in info.included]
        row: dict[str, Any] = {
            "round": r,
            "kind": "warm-up" if r == 0 else "flooded" if r in flooded else "clean",
            "leader": site(info.leader),
            "term": info.term,
            "committers": committers,
            "included": included,
            "honest_included": sum(1 for s in committers if s in included and s != attacker_name),
            "honest_committers": sum(1 for s in committers if s != attacker_name),
            "cycle_s": c["cycle_s"],
            "train_s": c["train_s"],
            "overhead_s": c["overhead_s"],
            "categories": c["categories"],
        }
        if (f := attacker.floods.get(r)) is not None:
            fin = min(
                (
                    rec.entered["disseminate"]
                    for j in journals.values()
                    if (rec := j.get(r)) and "disseminate" in rec.entered
                ),
                default=None,
            )
            after = f.get("rejections_after", {})
            before = f["rejections_before"]
            row["flood"] = {
                "frames": f["frames"],
                "mib": round(f["bytes"] / MIB, 1),
                "send_s": f["send_s"],
                "after_election_s": f["after_election_s"],
                "ended_before_finalize": fin is not None and f["ended"] <= fin,
                "rejected": {
                    k: int(v - before.get(k, 0)) for k, v in after.items() if v - before.get(k, 0) > 0
                },
            }
        rows.append(row)
    mean_clean = statistics.fmean(rows[r]["cycle_s"] for r in clean)
    flooded_cycles = [rows[r]["cycle_s"] for r in flooded]
    return {
        "bench": "attack",
        "cores": os.cpu_count(),
        "sites": 4,
        "attacker": attacker_name,
        "flood_frames": FLOOD_FRAMES,
        "clean_rounds": clean,
        "flooded_rounds": flooded,
        "rounds": rows,
        "clean_cycle_s": round(mean_clean, 3),
        "flooded_cycle_s": round(statistics.fmean(flooded_cycles), 3),
        "worst_flooded_cycle_s": round(max(flooded_cycles), 3),
        "ratio_worst": round(max(flooded_cycles) / mean_clean, 3),
        "ratio_mean": round(statistics.fmean(flooded_cycles) / mean_clean, 3),
        "overhead_ratio_mean": round(
            statistics.fmean(rows[r]["overhead_s"] for r in flooded)
            / statistics.fmean(rows[r]["overhead_s"] for r in clean),
            3,
        ),
        "floods_missed": [r for r in flooded if r not in attacker.floods],
        "attacker_error": attacker.error,
        "rounds_wall_s": round(wall, 1),
        "stranger": stranger,
        "alive_after": alive,
    }


__all__ = [
    "FLOOD_FRAMES",
    "MIB",
    "PARALLEL",
    "PING_DELAY_LIMIT_MS",
    "PING_INTERVAL",
    "PING_TIMEOUT",
    "RATIO_LIMIT",
    "RSS_LIMIT_MIB",
    "STRANGER_FRAME",
    "SWARM",
    "WATCH_INTERVAL",
    "Attacker",
    "BenchFailed",
    "Dealer",
    "QuietMember",
    "RssSampler",
    "_bulk_port",
    "_flood_cell",
    "_parallel",
    "_parallel_line",
    "_pings",
    "_proc_bytes",
    "_rejections",
    "_reset_peak",
    "_send_raw",
    "_send_zmq",
    "_span",
    "_vector",
    "_vectors",
    "_wait_done",
    "_zmtp_greeting",
    "attack_goals",
    "attack_notes",
    "attack_report",
    "flood_frames",
    "format_tables",
    "pinger",
    "run_attack_bench",
    "stranger_attack",
    "summarize",
]
