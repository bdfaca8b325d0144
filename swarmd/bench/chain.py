"""`swarm bench chain`: gas and latency of every SwarmLedger call, at 3 and N members, on a fresh devnet.

Each size gets its own anvil (instant blocks) and a freshly deployed ledger. It measures join and
admit per site, then full rounds (every site commits with its election seal, every site reveals its
secret, one elect, the leader finalizes with everyone included), secure-aggregation rounds (every site
advertises its keys first, commits quoting the key count, and the leader finalizes with one committer
recovered as a dropout) and one failover round (the leader stalls, reelect after the timeout, the new
leader finalizes). Every commit carries a non-zero epsilon (differential privacy's accounting), the
costlier calldata. Latency is the wall time of the Ledger call as a daemon sees it: estimate, sign, send
and wait for the receipt. Gas is the receipt's gasUsed.
`chain_report` judges the goals and renders the per-call table and the gas plot.
"""

from __future__ import annotations

import hashlib
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from eth_account import Account

from swarmd.bench.report import Goal, Report, Step, goal, pyplot, save_figure, table
from swarmd.ledger import DeployParams, Devnet, Ledger, Outcome
from swarmd.ledger.artifact import load_artifact
from swarmd.ledger.receipt import election_seal

GOALS = {
    "commit": 90_000,
    "reveal": 50_000,
    "elect": 150_000,
    "finalize": 150_000,
    "finalize_secagg": 150_000,
}
# Instant blocks: one block per transaction. A commit window this long never closes commits before every
# site committed; the reveal window holds every site's reveal.
_COMMIT_WINDOW = 10_000
_LEADER_TIMEOUT = 3


def _h(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


class _Recorder:
    """Each call's gas, latency and the client's own CPU (this process: building, signing, sending and
    waiting for the receipt; the node's work is anvil's)."""

    def __init__(self) -> None:
        self.samples: dict[str, list[tuple[int, float, float]]] = {}

    def __call__(self, name: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        t0, c0 = time.perf_counter(), time.process_time()
        receipt = call(*args, **kwargs)
        sample = (int(receipt["gasUsed"]), time.perf_counter() - t0, time.process_time() - c0)
        self.samples.setdefault(name, []).append(sample)
        return receipt

    def summary(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for name, rows in self.samples.items():
            gas = [g for g, _, _ in rows]
            ms = [s * 1000 for _, s, _ in rows]
            out[name] = {
                "n": len(rows),
                "gas": {"min": min(gas), "median": int(statistics.median(gas)), "max": max(gas)},
                "latency_ms": {"median": round(statistics.median(ms), 2), "max": round(max(ms), 2)},
                "client_cpu_ms": round(statistics.median(c * 1000 for _, _, c in rows), 2),
            }
        return out


def _bench_size(members: int, rounds: int) -> dict[str, Any]:
    rec = _Recorder()
    with Devnet.start(accounts=members + 2) as dev:
        keys = [Account.from_key(k) for k in dev.dev_keys]
        params = DeployParams(
            _h("bench-task"),
            _h("bench-init"),
            min(2, members),
            _COMMIT_WINDOW,
            _LEADER_TIMEOUT,
            secure_aggregation=True,
            reveal_window=members + 2,
        )
        t0 = time.perf_counter()
        admin = Ledger.deploy(dev.rpc_url, keys[0], params)
        deploy_ms = (time.perf_counter() - t0) * 1000
        sites = [Ledger(dev.rpc_url, admin.address, k) for k in keys[1 : members + 1]]
        by_address = {str(s.sender): s for s in sites}
        for i, site in enumerate(sites):
            rec("join", site.request_join, _h(f"curve-{i}"), f"tcp://10.0.0.{i + 1}:5555")
            rec("admit", admin.admit, site.sender)

        quorum_to_election: list[int] = []
        last = rounds + 1
        for r in range(last + 1):
            secagg = r % 2 == 1 and r != last  # odd rounds; the last one is the (plain) failover round
            _commit_round(rec, sites, r, secagg)
            for site in sites:
                rec("reveal", site.reveal, r, _secret(site, r))
            rec("elect", admin.elect, r)
            info = admin.round(r)
            quorum_to_election.append(int(info.elected_block) - info.commits[-1].block)  # type: ignore[arg-type]
            if r == last:  # the leader stalls
                dev.mine(_LEADER_TIMEOUT)
                rec("reelect", admin.reelect, r)
                info = admin.round(r)
            leader = by_address[str(info.leader)]
            if secagg:  # one committer's masked input "did not arrive": the leader recovered its masks
                dropped = [a for a in info.committers if a != info.leader][-1:]
                outcomes = {
                    a: Outcome.RECOVERED if a in dropped else Outcome.INCLUDED for a in info.committers
                }
                rec("finalize_secagg", leader.finalize, r, _h(f"m-{r}"), outcomes)
            else:
                outcomes = dict.fromkeys(info.committers, Outcome.INCLUDED)
                rec("finalize", leader.finalize, r, _h(f"m-{r}"), outcomes)

    calls = rec.summary()
    round_gas = (
        (calls["commit"]["gas"]["median"] + calls["reveal"]["gas"]["median"]) * members
        + calls["elect"]["gas"]["median"]
        + calls["finalize"]["gas"]["median"]
    )
    secagg_gas = (
        (
            calls["advertise"]["gas"]["median"]
            + calls["commit"]["gas"]["median"]
            + calls["reveal"]["gas"]["median"]
        )
        * members
        + calls["elect"]["gas"]["median"]
        + calls["finalize_secagg"]["gas"]["median"]
    )
    return {
        "members": members,
        "deploy_ms": round(deploy_ms, 1),
        "calls": calls,
        "round": {
            "transactions": 2 * members + 2,
            "gas": round_gas,
            "gas_per_site": round(round_gas / members),
            "blocks_quorum_to_election": max(quorum_to_election),
        },
        "secagg_round": {
            "transactions": 3 * members + 2,
            "gas": secagg_gas,
            "gas_per_site": round(secagg_gas / members),
        },
    }


def _commit_round(rec: _Recorder, sites: list[Ledger], r: int, secagg: bool) -> None:
    if secagg:
        for i, site in enumerate(sites):
            rec("advertise", site.advertise_keys, r, _h(f"mask-{r}-{i}"), _h(f"enc-{r}-{i}"))
    keys = len(sites) if secagg else 0
    for i, site in enumerate(sites):
        eps = 1000 * (r + 1) + 17 * i  # cumulative epsilon x1000, as a DP site reports it
        seal = election_seal(_secret(site, r), str(site.sender), r)
        rec("commit", site.commit, r, _h(f"u-{r}-{i}"), 100 + i, seal=seal, milli_epsilon=eps, key_count=keys)


def _secret(site: Ledger, r: int) -> bytes:
    return _h(f"secret-{site.sender}-{r}")


def run_chain_bench(members: int = 8, quick: bool = False) -> dict[str, Any]:
    """Measure every call at 3 members and at `members` members; returns a JSON-able report."""
    if members < 2:
        raise ValueError("the chain bench needs at least 2 members")
    sizes = sorted({3, members})
    rounds = 1 if quick else 3  # plus the failover round: 1 + 1 (quick) or 3 + 1 rounds, odd ones secagg
    results = {str(n): _bench_size(n, rounds) for n in sizes}
    largest = results[str(max(sizes))]["calls"]
    worst = {name: largest[name]["gas"]["max"] for name in GOALS}
    goals = {n: {"limit": lim, "max_gas": worst[n], "met": worst[n] <= lim} for n, lim in GOALS.items()}
    art = load_artifact()
    return {
        "bench": "chain",
        "mode": "anvil, instant blocks",
        "compiler": art.compiler_version,
        "rounds_per_size": rounds + 2,
        "sizes": results,
        "goals_at_members": max(sizes),
        "goals": goals,
    }


def chain_steps(members: int = 8, quick: bool = False) -> list[Step]:
    return [(f"3 and {members} members", partial(run_chain_bench, members, quick))]


def chain_goals(result: dict[str, Any]) -> list[Goal]:
    at = result["goals_at_members"]
    goals = [
        goal(f"{call} gas at {at} members (max)", g["max_gas"], g["limit"], g["met"])
        for call, g in result["goals"].items()
    ]
    r = result["sizes"][str(at)]["round"]
    goals.append(
        goal(
            "transactions per round (two per site + two)",
            r["transactions"],
            2 * at + 2,
            r["transactions"] <= 2 * at + 2,
        )
    )
    sa = result["sizes"][str(at)].get("secagg_round")
    if sa is not None:
        limit = 3 * at + 2
        goals.append(
            goal(
                "transactions per secure-aggregation round (three per site + two)",
                sa["transactions"],
                limit,
                sa["transactions"] <= limit,
            )
        )
    return goals


def chain_report(result: dict[str, Any], out: Path) -> Report:
    """`run_chain_bench`'s result with its goals, tables and plot (written into `out`)."""
    return Report("chain", result, chain_goals(result), chain_tables(result), [chain_plot(result, out)])


# --- rendering --------------------------------------------------------------------------------------
def chain_tables(result: dict[str, Any]) -> str:
    out = []
    for size, r in result["sizes"].items():
        head = (
            "call",
            "n",
            "gas min",
            "gas median",
            "gas max",
            "latency median ms",
            "latency max ms",
            "client CPU median ms",
        )
        rows = []
        for call, c in r["calls"].items():
            g, lat = c["gas"], c["latency_ms"]
            rows.append(
                (
                    call,
                    c["n"],
                    f"{g['min']:,}",
                    f"{g['median']:,}",
                    f"{g['max']:,}",
                    lat["median"],
                    lat["max"],
                    c.get("client_cpu_ms", "-"),  # results written before it was measured lack it
                )
            )
        sa = r.get("secagg_round")
        sa_text = (
            f" A secure-aggregation round: {sa['transactions']} transactions, {sa['gas']:,} gas "
            f"({sa['gas_per_site']:,} per site)."
            if sa
            else ""
        )
        out += [
            f"**{size} members**, deploy {r['deploy_ms']} ms. Per round: {r['round']['transactions']} "
            f"transactions, {r['round']['gas']:,} gas ({r['round']['gas_per_site']:,} per site), "
            f"{r['round']['blocks_quorum_to_election']} block(s) from the last commit to the election."
            + sa_text,
            "",
            table(head, rows),
            "",
        ]
    return "\n".join(out)


def chain_plot(result: dict[str, Any], out: Path) -> Path:
    plt = pyplot()
    sizes = list(result["sizes"])
    calls = list(result["sizes"][sizes[-1]]["calls"])
    fig, ax = plt.subplots(figsize=(7, 3.6))
    width = 0.8 / len(sizes)
    for i, size in enumerate(sizes):
        c = result["sizes"][size]["calls"]
        ax.bar(
            [x + i * width for x in range(len(calls))],
            [c[k]["gas"]["median"] if k in c else 0 for k in calls],
            width,
            label=f"{size} members",
        )
    for call, limit in result["goals"].items():
        x = calls.index(call)
        ax.hlines(limit["limit"], x - 0.1, x + 0.9, colors="red", linestyles="dashed")
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(calls))], calls)
    ax.set_ylabel("gas (median)")
    ax.set_title("SwarmLedger gas per call (red: goal)")
    ax.legend()
    return save_figure(fig, out / "chain_gas.png")
