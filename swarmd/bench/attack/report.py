"""`swarm bench attack`'s goals, tables and notes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from swarmd.bench.report import Goal, Report, goal, table

if TYPE_CHECKING:
    pass
from swarmd.bench.attack.common import (
    PING_DELAY_LIMIT_MS,
    PING_INTERVAL,
    PING_TIMEOUT,
    RATIO_LIMIT,
    RSS_LIMIT_MIB,
)


# --- goals and rendering ----------------------------------------------------------------------------
def attack_goals(result: dict[str, Any]) -> list[Goal]:
    flooded = [r for r in result["rounds"] if r["kind"] == "flooded"]
    missed = result["floods_missed"]
    ratio = result["ratio_worst"]
    goals = [
        goal(
            "member flood of 10,000 malformed frames: worst flooded round / mean clean round",
            ratio,
            RATIO_LIMIT,
            ratio <= RATIO_LIMIT and not missed,
            f"mean flooded / mean clean {result['ratio_mean']}; overhead (cycle - training) "
            f"{result.get('overhead_ratio_mean', '-')}"
            + (f"; no flood in rounds {missed}" if missed else ""),
        )
    ]
    share = min((r["honest_included"] / max(r["honest_committers"], 1) for r in flooded), default=0.0)
    goals.append(
        goal(
            "honest committers included in every flooded round (%)",
            round(100 * share, 1),
            100.0,
            share >= 1.0 and all(r["honest_committers"] == 3 for r in flooded),
        )
    )
    st = result["stranger"]
    growth = max(
        [
            v
            for row in st["vectors"]
            for v in (row["hwm_growth_mib"], row["sampled_growth_mib"])
            if v is not None
        ]
        + [v for v in (st["phase_hwm_growth_mib"], st["phase_sampled_growth_mib"]) if v is not None]
    )
    goals.append(
        goal(
            "stranger's 16 MiB frames to every port: daemon peak RSS growth (MiB)",
            growth,
            RSS_LIMIT_MIB,
            growth < RSS_LIMIT_MIB,
            "kernel high-water mark reset before each vector"
            if st["peak_reset"]
            else "sampled every 5 ms only",
        )
    )
    base = st["baseline"]["median_ms"] or 0.0
    worst = st["attack"]["max_ms"]
    delay = round(worst - base, 2) if worst is not None else float(PING_TIMEOUT * 1000)
    goals.append(
        goal(
            "stranger's 16 MiB frames: ping delay (max round trip under attack - median at rest, ms)",
            delay,
            PING_DELAY_LIMIT_MS,
            delay < PING_DELAY_LIMIT_MS and st["attack"]["missed"] == 0 and bool(st["attack"]["pings"]),
            f"p99 {st['attack']['p99_ms']} ms, {st['attack']['missed']} missed of {st['attack']['pings']}",
        )
    )
    return goals


def format_tables(result: dict[str, Any]) -> str:
    st = result["stranger"]
    cats = ("chain", "exchange", "merge", "dissemination", "waiting")
    rounds = table(
        ("round", "kind", "leader", "cycle s", "train s", "overhead s", *cats, "included", "flood"),
        (
            (
                r["round"],
                r["kind"],
                r["leader"],
                f"{r['cycle_s']:.2f}",
                f"{r['train_s']:.2f}",
                f"{r['overhead_s']:.2f}",
                *(f"{r['categories'][k]:.2f}" for k in cats),
                f"{r['honest_included']}/{r['honest_committers']}",
                _flood_cell(r.get("flood")),
            )
            for r in result["rounds"]
        ),
    )
    vectors = table(
        (
            "vector",
            "sent",
            "peak RSS growth MiB (VmHWM)",
            "sampled MiB",
            "pings",
            "missed",
            "p99 ms",
            "max ms",
        ),
        (
            (
                v["vector"],
                v["sent"],
                "-" if v["hwm_growth_mib"] is None else f"{v['hwm_growth_mib']:.1f}",
                f"{v['sampled_growth_mib']:.1f}",
                v["pings"],
                v["missed"],
                v["p99_ms"],
                v["max_ms"],
            )
            for v in st["vectors"]
        ),
    )
    b = st["baseline"]
    return "\n".join(
        [
            f"4 members on instant blocks, {result['cores']} cores: 3 daemons (DenseNet121, 1 local step) "
            f"and an attacker ({result['attacker']}) that never commits. Round 0 warms up, rounds "
            f"{_span(result['clean_rounds'])} are clean, rounds {_span(result['flooded_rounds'])} flooded: "
            f"{result['flood_frames']:,} malformed frames to the leader from its election. Mean clean cycle "
            f"{result['clean_cycle_s']:.2f} s, mean flooded {result['flooded_cycle_s']:.2f} s, worst flooded "
            f"{result['worst_flooded_cycle_s']:.2f} s.",
            "",
            rounds,
            "",
            f"Stranger at {st['site']} (idle after its rounds, RSS {st['rss_mib']} MiB): 16 MiB frames for "
            f"{st['seconds_per_vector']:g} s per vector (sent: messages or connections); a member pinging "
            f"every {PING_INTERVAL * 1000:.0f} ms: at rest median {b['median_ms']} ms, p99 {b['p99_ms']} ms, "
            f"max {b['max_ms']} ms over {b['pings']} pings"
            + (
                ""
                if st["bulk_port_found"]
                else "; the bulk port was not found in the daemon's log, not attacked"
            )
            + ".",
            "",
            vectors,
            *_parallel_line(st.get("parallel")),
        ]
    )


def _parallel_line(p: dict[str, Any] | None) -> list[str]:
    if not p:
        return []
    hwm = "-" if p["hwm_growth_mib"] is None else f"{p['hwm_growth_mib']:.1f}"
    return [
        "",
        f"Beyond the goal (one frame): {p['vector']}, {p['sent']} connections in all: peak RSS growth "
        f"{hwm} MiB (sampled {p['sampled_growth_mib']:.1f}), pings max {p['max_ms']} ms, "
        f"{p['missed']} missed.",
    ]


def _flood_cell(f: dict[str, Any] | None) -> str:
    if f is None:
        return ""
    rejected = ", ".join(f"{k} {v}" for k, v in sorted(f["rejected"].items())) or "none counted"
    spill = "" if f["ended_before_finalize"] else ", outlasted the round"
    return f"{f['frames']:,} frames ({f['mib']} MiB) in {f['send_s']:.2f} s{spill}; rejected: {rejected}"


def _span(rounds: list[int]) -> str:
    return f"{rounds[0]}-{rounds[-1]}" if len(rounds) > 1 else str(rounds[0])


def attack_notes(result: dict[str, Any]) -> list[str]:
    notes = [
        "The attacker never commits, so it never leads and every round has the same three honest "
        "committers; the election waits for them (min_peers 3, commit_window 1) and not for the attacker. "
        "It polls the chain every 20 ms in every round, clean or flooded, so both pay the same for it. "
        "Its own node answers at its registered endpoint. A member that did not answer cost every "
        "round about 30 s before (each daemon waited for its announce to time out before its next "
        "round); announces now give up after gossip.ANNOUNCE_TIMEOUT (2 s).",
        "A flood's frames are decoded after they are sent: its cost may fall into the next round "
        "(flooded rounds follow each other, so only into a flooded one); rounds are short (1 local step), "
        "so a few seconds of contention on 2 cores moves the ratio a lot: the overhead ratio and the "
        "per-round table show where the time went.",
    ]
    if result["attacker_error"]:
        notes.append(f"The attacker failed: {result['attacker_error']}.")
    dead = {"site-a", "site-b", "site-c"} - set(result["alive_after"])
    if dead:
        notes.append(f"Not running at the end: {', '.join(sorted(dead))}.")
    return notes


def attack_report(result: dict[str, Any]) -> Report:
    return Report("attack", result, attack_goals(result), format_tables(result), [], attack_notes(result))
