"""`swarm bench wan`: rounds of real daemons over shaped links, each site and the chain in its own
network namespace (`swarmd.ops.netns`), against the wire floor of the exchange topology.

The network: a bridge in a hub namespace; the chain (anvil) on an unshaped link; every site on a
link shaped to `rate` in both directions (tbf on both veth ends). Sites bind and advertise their
namespace address, and reach the chain and each other only over that network. No latency is added
(`netem` is not in this kernel): the links have a rate and no delay. TCP in every namespace is cubic,
Linux's default (`tcp`; see `swarmd.ops.netns` for why not the host's), and the task disseminates with
`fanout` 1: a chain the merged model crosses with cut-through, one model time out of every site's link
(with 2, each inner node's uplink carries the model twice: measured, 4.8 s against 2.9 at N = 3, 100 Mbit/s).

The chain is provisioned (deploy, joins with the namespace endpoints, admissions) on a loopback anvil
before the daemons exist; that anvil's state is loaded by the chain namespace's anvil, and each
site.toml is pointed at it. Provisioning is not measured.

Round timing is the round bench's (`swarmd.bench.round._cycle`: cycle from finalize r-1 to finalize
r, overhead = cycle - TRAIN phase; also cycle - the trainer's own seconds). Bytes are the wire count:
each site's `eth0` counters in its namespace (/proc/<daemon pid>/net/dev, Ethernet/IP/TCP headers,
retransmissions and chain RPC included), sampled every SAMPLE_S and interpolated at the cycle bounds.
With them, the CPU: the host's busy seconds (every core, the kernel's network work included) and the
daemons' and the chain's own, so a round's overhead window says whether the cores or the links were full.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from swarmd.bench.compression import compressed_task
from swarmd.bench.round import DATA, BenchFailed, _cycle, bench_task
from swarmd.config import load_config, with_chain, write_config
from swarmd.daemon.store import Journal, RoundRecord
from swarmd.errors import DaemonError
from swarmd.ledger import Devnet
from swarmd.ledger.devnet import anvil_ws_url, find_anvil
from swarmd.ops import DaemonProcess, LocalConsortium, local_consortium, stop_all
from swarmd.ops.netns import (
    NetnsError,
    Node,
    WanNet,
    format_rate,
    link_counters,
    parse_rate,
    parse_tbf_stats,
    wan_net,
)

TCP = {"cubic": ("cubic", "reno"), "host": ()}  # --tcp: what to try in each namespace; others: just it
# A host whose default is another algorithm lets a namespace choose only it and reno (both loss-based:
# on these links they measured alike), unless net.ipv4.tcp_allowed_congestion_control lists cubic.
SWARM = {"fanout": 1}  # the round bench's task, but a dissemination chain: bandwidth, not CPU, bounds it
# The sharded topology's: 32 leaves, which measured better than the default 64 at both rates and at N = 3
# and 8 on this bench (docs/benchmarks.md, "the leaf count").
LEAVES = 32
SAMPLE_S = 0.05  # link counters: well under one model's time at 1 Gbit/s (0.22 s for DenseNet121)
POLL_S = 0.5  # the daemons' status
CHAIN_PORT = 8545
SITE_PORT = 7700  # every site is alone in its namespace: the same ports for all would do too

Sample = tuple[float, dict[str, tuple[float, float]]]  # (unix time, {node: (rx, tx) bytes})
# The CPU's samples take the same shape: (user, kernel) CPU seconds of the host under HOST (every core's
# time neither idle nor waiting on I/O; interrupts count as kernel) and of each daemon and the chain.
HOST = "host"


# --- floors ------------------------------------------------------------------------------------------
def wire_floor_bytes(topology: str, n: int, model_bytes: int, *, disseminate: bool = True) -> float:
    """Bytes the busiest site's one link must carry in one direction in a round.

    leader:  (N-1) models into the leader, then (disseminate) the merged model out of it once (sites
             relay it further on their own links).
    sharded: reduce-scatter and all-gather, (N-1)/N of a model each way: 2 (N-1)/N models."""
    if topology == "leader":
        return ((n - 1) + (1 if disseminate else 0)) * model_bytes
    if topology == "sharded":
        return 2 * (n - 1) / n * model_bytes
    raise ValueError(f"unknown topology {topology!r}")


def wire_floor_s(
    topology: str, n: int, model_bytes: int, rate_bps: int, *, disseminate: bool = True
) -> float:
    """`wire_floor_bytes` over a link of `rate_bps` bits per second."""
    return wire_floor_bytes(topology, n, model_bytes, disseminate=disseminate) * 8 / rate_bps


# --- counters ---------------------------------------------------------------------------------------
def at(samples: Sequence[Sample], node: str, t: float) -> tuple[float, float]:
    """(rx, tx) of `node` at time `t`, linearly between the samples around it (clamped at the ends)."""
    pts = [(ts, c[node]) for ts, c in samples if node in c]
    if not pts:
        raise BenchFailed(f"no byte counters were read for {node}")
    if t <= pts[0][0]:
        return float(pts[0][1][0]), float(pts[0][1][1])
    for (t0, a), (t1, b) in itertools.pairwise(pts):
        if t <= t1:
            w = (t - t0) / (t1 - t0) if t1 > t0 else 1.0
            return a[0] + w * (b[0] - a[0]), a[1] + w * (b[1] - a[1])
    return float(pts[-1][1][0]), float(pts[-1][1][1])


def window_bytes(samples: Sequence[Sample], node: str, start: float, end: float) -> dict[str, int]:
    """Bytes `node` received and sent between `start` and `end`."""
    (rx0, tx0), (rx1, tx1) = at(samples, node, start), at(samples, node, end)
    return {"in": round(rx1 - rx0), "out": round(tx1 - tx0)}


FULL = 0.8  # a link counts as full at this share of its rate, in its busier direction


def full_seconds(samples: Sequence[Sample], node: str, start: float, end: float, rate_bps: int) -> float:
    """Seconds between `start` and `end` in which `node`'s link ran at >= FULL of `rate_bps` in or out,
    by the intervals between samples (clipped to the window). Set against the floor's seconds it says
    how much of a round the link was the limit, and where it idled (the phases' ends, the chain)."""
    pts = [(ts, c[node]) for ts, c in samples if node in c]
    full = 0.0
    for (t0, a), (t1, b) in itertools.pairwise(pts):
        lo, hi = max(t0, start), min(t1, end)
        if hi <= lo or t1 <= t0:
            continue
        busier = max(b[0] - a[0], b[1] - a[1]) * 8 / (t1 - t0)
        if busier >= FULL * rate_bps:
            full += hi - lo
    return full


def cpu_busy(cpu: Sequence[Sample], start: float, end: float, cores: int) -> dict[str, Any]:
    """Between `start` and `end`: the share of all `cores` the host kept busy, and the CPU seconds each
    daemon and the chain used. A share near 1 says the CPU, not the link, set the pace there."""
    if not cpu or end <= start:
        return {}

    def used(name: str) -> float:
        (user0, kernel0), (user1, kernel1) = at(cpu, name, start), at(cpu, name, end)
        return user1 - user0 + kernel1 - kernel0

    seconds = {name: round(used(name), 3) for name in sorted(cpu[-1][1]) if name != HOST}
    return {
        "host_busy": round(used(HOST) / ((end - start) * cores), 3),
        "swarm_s": round(sum(seconds.values()), 3),
        "processes_s": seconds,
    }


def cycle_start(r: int, journals: dict[str, dict[int, RoundRecord]]) -> float:
    """Where `_cycle` starts round r: the first finalize of r-1 (round 0: the first sync)."""
    phase, rr = ("sync", 0) if r == 0 else ("disseminate", r - 1)
    return min(t for j in journals.values() if (t := (j.get(rr) or RoundRecord(rr)).entered.get(phase)))


# --- running it -------------------------------------------------------------------------------------
@dataclass
class _Run:
    net: WanNet
    chain: Node
    sites: list[Node]
    consortium: LocalConsortium
    daemons: list[DaemonProcess]
    anvil: subprocess.Popen[bytes] | None = None
    procs: dict[int, psutil.Process] = field(default_factory=dict)
    # Each process's last (user, system) reading, which stands once it has exited.
    cpu_seen: dict[str, tuple[float, float]] = field(default_factory=dict)

    def pids(self) -> dict[str, int]:
        pids = {d.name: d.pid for d in self.daemons if d.pid is not None}
        if self.anvil is not None:
            pids["chain"] = self.anvil.pid
        return pids

    def sample(self) -> Sample:
        counters: dict[str, tuple[float, float]] = {}
        for name, pid in self.pids().items():
            with contextlib.suppress(NetnsError):  # the process has just exited: no sample for it
                counters[name] = link_counters(pid)
        return time.time(), counters

    def cpu_sample(self) -> Sample:
        host = psutil.cpu_times()
        # Linux counts guest time inside user and nice already: it is not added again.
        kernel = sum(getattr(host, k, 0.0) for k in ("system", "irq", "softirq", "steal"))
        for name, pid in self.pids().items():
            with contextlib.suppress(psutil.Error):  # it has just exited: its last reading stands
                own = self.procs.setdefault(pid, psutil.Process(pid)).cpu_times()
                self.cpu_seen[name] = (own.user, own.system)
        return time.time(), {HOST: (host.user + host.nice, kernel), **self.cpu_seen}


def _provision(root: Path, task: Path, run_sites: list[Node], chain: Node) -> LocalConsortium:
    """Deploy, join (with namespace endpoints) and admit on a loopback anvil whose state the chain
    namespace's anvil then loads; every site.toml is pointed at the chain's namespace address."""
    state = root / "chain-state.json"
    with Devnet.start(accounts=max(10, len(run_sites) + 4), state_file=state) as dev:
        consortium = local_consortium(
            root,
            rpc_url=dev.rpc_url,
            dev_keys=list(dev.dev_keys),
            task_path=task,
            sites=len(run_sites),
            alpha=DATA.alpha,
            seed=DATA.seed,
            n_per_site=DATA.n_per_site,
            n_test=DATA.n_test,
            base_port=SITE_PORT,
            hosts=[s.ip for s in run_sites],
        )
    for site in consortium.sites:
        point_at_chain(site.config, chain.ip)
    return consortium


def point_at_chain(config: Path, ip: str) -> None:
    """Point a site.toml at the chain's namespace address: its JSON-RPC and its new-heads websocket,
    as a site would have them (without the websocket a site polls, learns of a finalize up to a poll
    late, and starts its next round that much late)."""
    url = f"http://{ip}:{CHAIN_PORT}"
    write_config(with_chain(load_config(config), rpc_url=url, ws_url=anvil_ws_url(url)), config)


def _start_chain(run: _Run, state: Path, log: Path) -> None:
    argv = [
        str(find_anvil()), "--host", run.chain.ip, "--port", str(CHAIN_PORT),
        "--accounts", str(max(10, len(run.sites) + 4)), "--load-state", str(state),
    ]  # fmt: skip
    with open(log, "ab") as out:
        run.anvil = subprocess.Popen(run.chain.argv(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    # Reached from a site's namespace: the same path the daemons take.
    run.net.wait_tcp(run.sites[0].name, run.chain.ip, CHAIN_PORT, timeout=30)


def _wait(
    run: _Run, timeout: float, samples: list[Sample], cpu: list[Sample], note: Callable[[str], None]
) -> None:
    """Until every daemon is done, sampling the links and the CPU every SAMPLE_S (a thread) and the
    daemons every POLL_S; BenchFailed when one dies or at `timeout`."""
    stop = threading.Event()

    def sample() -> None:
        samples.append(run.sample())
        cpu.append(run.cpu_sample())

    def sampling() -> None:
        while not stop.wait(SAMPLE_S):
            sample()

    sampler = threading.Thread(target=sampling, name="wan-counters", daemon=True)
    sample()
    sampler.start()
    try:
        _poll(run, timeout, note)
    finally:
        stop.set()
        sampler.join()
    sample()


def _poll(run: _Run, timeout: float, note: Callable[[str], None]) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        dead = [d for d in run.daemons if not d.alive()]
        if dead:
            raise BenchFailed(f"daemon {dead[0].name} exited; its log ends:\n{dead[0].tail(40)}")
        sts = [d.status() for d in run.daemons]
        phases = [st["phase"] if st else "starting" for st in sts]
        rnd = min((st["round"] for st in sts if st), default=0)
        note(f"round {rnd}, {phases.count('done')}/{len(sts)} done, {time.monotonic() - t0:.0f} s")
        if all(p == "done" for p in phases):
            return
        time.sleep(POLL_S)
    tails = "\n".join(f"==== {d.name}\n{d.tail(15)}" for d in run.daemons)
    raise BenchFailed(f"timed out after {timeout:.0f} s waiting for every site to finish\n{tails}")


def _budget(sites: int, rounds: int, rate_bps: int) -> float:
    """Seconds to allow: the round bench's allowance for contended training, plus 3 leader floors of a
    30 MB model per round for the links."""
    return 120 + rounds * sites * 40 + rounds * 3 * wire_floor_s("leader", sites, 30 << 20, rate_bps)


def _keep(consortium: LocalConsortium, root: Path, dest: Path) -> None:
    for s in consortium.sites:
        (dest / s.name).mkdir(parents=True, exist_ok=True)
        for src in (s.config.parent / "swarmd.log", s.journal):
            if src.exists():
                shutil.copy2(src, dest / s.name / ("journal.json" if src == s.journal else src.name))
    if (root / "anvil.log").exists():
        shutil.copy2(root / "anvil.log", dest / "anvil.log")


def run_wan_bench(
    sites: int = 3,
    rate: str = "100mbit",
    *,
    rounds: int = 2,
    model: str = "densenet121",
    topology: str = "leader",
    on_step: Callable[[str], None] | None = None,
    keep_logs: Path | None = None,
    compression: str = "none",
    tcp: str = "cubic",
    leaves: int = LEAVES,
) -> dict[str, Any]:
    """Rounds of `sites` daemons over links of `rate` (e.g. '100mbit') in the task's exchange `topology`
    ("leader" or "sharded"), with TCP congestion control `tcp` in the namespaces ("host": the host's
    default); see the module doc.

    NetnsUnavailable (with the reason) where this machine cannot make namespaces."""
    rate_bps = parse_rate(rate)
    label = f"N={sites} at {format_rate(rate_bps)}, {topology}"
    note = on_step or (lambda msg: None)
    load = os.getloadavg()[0]
    root = Path(tempfile.mkdtemp(prefix="swn-", dir="/tmp"))  # unix socket paths must stay short
    try:
        with wan_net(TCP.get(tcp, (tcp,))) as net:
            chain = net.add("chain", None)
            nodes = [net.add(f"s{i}", rate_bps) for i in range(sites)]
            note(f"{label}: provisioning the chain")
            sharded = {"topology": "sharded", "leaves": leaves} if topology == "sharded" else None
            task = compressed_task(
                bench_task(root, model, rounds, exchange=sharded, swarm=SWARM), compression
            )
            consortium = _provision(root, task, nodes, chain)
            run = _Run(net, chain, nodes, consortium, _daemons(consortium, nodes))
            in_force = net.tcp
            measured = _measure(run, root, _budget(sites, rounds, rate_bps), lambda m: note(f"{label}: {m}"))
            if keep_logs is not None:
                dest = keep_logs / f"n{sites}-{format_rate(rate_bps)}-{topology}"
                _keep(consortium, root, dest)
                # Every SAMPLE_S: what each node's link had moved (rx, tx bytes), for a look at the phases.
                (dest / "links.json").write_text(json.dumps([[t, c] for t, c in measured.samples]))
                (dest / "cpu.json").write_text(json.dumps([[t, c] for t, c in measured.cpu]))
    except DaemonError as exc:
        raise BenchFailed(str(exc)) from None
    finally:
        shutil.rmtree(root, ignore_errors=True)
    rows = summarize(
        measured.journals,
        measured.samples,
        sites=sites,
        rounds=rounds,
        rate_bps=rate_bps,
        topology=topology,
        cpu=measured.cpu,
        cores=os.cpu_count() or 1,
    )
    return {
        "bench": "wan",
        "sites": sites,
        "rate": format_rate(rate_bps),
        "rate_bps": rate_bps,
        "model": model,
        "rounds": rounds,
        "topology": topology,
        "compression": compression,
        "tcp": in_force,
        "fanout": SWARM["fanout"],
        "leaves": leaves if topology == "sharded" else None,
        "cores": os.cpu_count(),
        "load_at_start": round(load, 2),
        "wall_s": round(measured.wall, 1),
        "tbf": measured.tbf,
        **rows,
    }


def _daemons(consortium: LocalConsortium, nodes: list[Node]) -> list[DaemonProcess]:
    """Each site's daemon, to run inside its node's namespace."""
    return [
        DaemonProcess(s.name, s.config, s.config.parent / "swarmd.log", wrap=tuple(n.argv([])))
        for s, n in zip(consortium.sites, nodes, strict=True)
    ]


@dataclass(frozen=True)
class _Measured:
    journals: dict[str, dict[int, RoundRecord]]
    samples: list[Sample]
    cpu: list[Sample]
    tbf: dict[str, dict[str, dict[str, int]]]  # site -> up/down -> what its qdisc sent and dropped
    wall: float


def _measure(run: _Run, root: Path, budget: float, note: Callable[[str], None]) -> _Measured:
    """Start the chain and the daemons, sample every link until all are done, stop them, read it all."""
    samples: list[Sample] = []
    cpu: list[Sample] = []
    try:
        _start_chain(run, root / "chain-state.json", root / "anvil.log")
        t0 = time.perf_counter()
        for d in run.daemons:
            d.start()
        _wait(run, budget, samples, cpu, note)
        wall = time.perf_counter() - t0
    finally:
        stop_all(run.daemons, timeout=20)
        if run.anvil is not None:
            run.anvil.terminate()
            run.anvil.wait(10)
    tbf = {
        s.name: {k: parse_tbf_stats(v) for k, v in run.net.qdiscs(n.name).items()}
        for s, n in zip(run.consortium.sites, run.sites, strict=True)
    }
    journals = {s.name: Journal.read(s.journal).rounds for s in run.consortium.sites}
    return _Measured(journals, samples, cpu, tbf, wall)


def summarize(
    journals: dict[str, dict[int, RoundRecord]],
    samples: Sequence[Sample],
    *,
    sites: int,
    rounds: int,
    rate_bps: int,
    topology: str = "leader",
    cpu: Sequence[Sample] = (),
    cores: int = 1,
) -> dict[str, Any]:
    """Per round: the round bench's cycle split, each site's wire bytes, the floor and overhead / floor,
    and (given `cpu` samples) how busy the host's `cores` were in the overhead's window."""
    model_bytes = max(rec.model_bytes for j in journals.values() for rec in j.values())
    cycles = []
    for r in range(rounds):
        c = _cycle(r, journals)
        start = cycle_start(r, journals)
        end = start + c["cycle_s"]  # the first finalize of round r
        floor = wire_floor_s(topology, sites, model_bytes, rate_bps, disseminate=r > 0)
        per_site = {s: window_bytes(samples, s, start, end) for s in journals}
        busy = end - c["overhead_s"]
        busiest = max(max(b["in"], b["out"]) for b in per_site.values())
        cycles.append(
            {
                **c,
                "overhead_trainer_s": round(c["cycle_s"] - c["trainer_s"], 3),
                "floor_s": round(floor, 3),
                "overhead_vs_floor": round(c["overhead_s"] / floor, 2),
                "bytes": per_site,
                "chain_bytes": window_bytes(samples, "chain", start, end),
                # from the last committer's training done to the finalize: what the overhead counts
                "link_full_s": {s: round(full_seconds(samples, s, busy, end, rate_bps), 2) for s in journals},
                "busiest_link_vs_floor": round(
                    busiest / wire_floor_bytes(topology, sites, model_bytes, disseminate=r > 0), 3
                ),
                "cpu": cpu_busy(cpu, busy, end, cores),
            }
        )
    steady = cycles[1:] or cycles
    shares = [c["cpu"]["host_busy"] for c in steady if c["cpu"]]
    return {
        "model_bytes": model_bytes,
        "params_m": round(model_bytes / 4 / 1e6, 2),
        "cycles": cycles,
        "steady_rounds": [c["round"] for c in steady],
        "overhead_s": round(statistics.fmean(c["overhead_s"] for c in steady), 3),
        "floor_s": round(statistics.fmean(c["floor_s"] for c in steady), 3),
        "overhead_vs_floor": round(statistics.fmean(c["overhead_vs_floor"] for c in steady), 2),
        "host_busy": round(statistics.fmean(shares), 3) if shares else None,
    }
