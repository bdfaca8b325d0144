"""`swarm status`: what the local daemon is doing, from its control socket."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from swarmd.cli.common import cli_errors, console, print_json
from swarmd.scores import fmt_score


def status(
    config: Path = typer.Option(..., help="The site's site.toml."),
    json_out: bool = typer.Option(False, "--json", help="Print raw JSON."),
) -> None:
    """Round, phase, leader, peers seen, last merged model, samples, metrics, privacy spent, and the
    problems with local state the daemon is repairing."""
    from swarmd.config import load_config
    from swarmd.daemon.control import query_status

    with cli_errors():
        st = query_status(load_config(config).control_socket)
    if json_out:
        print_json(st)
        return
    t = Table(title=f"swarmd {st['site']} ({st['address']})", show_header=False)
    t.add_column(style="bold")
    t.add_column()
    now = time.time()
    names: dict[str, str] = st.get("peer_names", {})
    t.add_row("membership", _membership(st.get("membership", "unknown")))
    t.add_row("round", f"{st['round']} of {st['rounds_total']}")
    t.add_row("phase", f"{st['phase']} for {now - st['phase_since']:.0f}s")
    leader = st["leader"]
    t.add_row("leader", f"{escape(names.get(leader, leader)) if leader else '-'} (term {st['term']})")
    t.add_row("chain", _chain(st))
    seen = sorted(st["peers_seen"].items())
    peers = ", ".join(f"{escape(names.get(a, a[:10] + '..'))} {now - ts:.0f}s ago" for a, ts in seen)
    t.add_row("peers seen", peers or "-")
    if paths := st.get("peer_paths"):  # sites on the libp2p path (issue 18): how each peer is reached
        t.add_row("peer paths", _paths(paths))
    t.add_row("last merged", f"round {st['last_merged_round']} {st['last_merged_hash'][:18]}")
    t.add_row("samples", str(st["n_samples"]))
    t.add_row("loss", "-" if st["last_loss"] is None else f"{st['last_loss']:.4f}")
    t.add_row("metrics", ", ".join(f"{k}={fmt_score(v, 4)}" for k, v in st["metrics"].items()) or "-")
    t.add_row("baseline", ", ".join(f"{k}={fmt_score(v, 4)}" for k, v in st["baseline"].items()) or "-")
    if st.get("personalised_hash"):  # `swarm.personalise_steps`: the site's fine-tuned final model
        scores = ", ".join(f"{k}={fmt_score(v, 4)}" for k, v in st["personalised_metrics"].items())
        t.add_row("personalised", f"{st['personalised_hash'][:18]} {scores or '-'}")
    spent = " [yellow](budget spent: not committing, still serving)[/]" if st.get("budget_spent") else ""
    t.add_row("epsilon", ("-" if st["epsilon"] is None else f"{st['epsilon']:.3f}") + spent)
    problems = st.get("problems", [])
    for p in problems:
        t.add_row(
            "[red]problem[/]",
            escape(f"{p['kind']} for {now - p['since']:.0f}s: {p['detail']}; {p['action']}"),
        )
    if not problems:
        t.add_row("problems", "none")
    repaired = st.get("repaired", [])
    if repaired:
        last = repaired[-1]
        t.add_row(
            "repaired", escape(f"{len(repaired)}, last {last['kind']} {now - last['repaired']:.0f}s ago")
        )
    console.print(t)


def _paths(paths: dict[str, dict[str, Any]]) -> str:
    """'site-c relayed (out 28.0 MB relayed, in 28.0 MB relayed), site-b zmq (...)'."""
    parts = []
    for name, info in sorted(paths.items()):
        moved = [
            f"{d} {n / 1e6:.1f} MB {path}"
            for d in ("out", "in")
            for path, n in sorted(info.get(f"bytes_{d}", {}).items())
            if n
        ]
        parts.append(f"{escape(name)} {info.get('path', '?')}" + (f" ({', '.join(moved)})" if moved else ""))
    return ", ".join(parts)


def _membership(standing: str) -> str:
    """The daemon's standing (daemon.membership.Standing) as the status table says it."""
    from swarmd.daemon.membership import Standing

    try:
        st = Standing(standing)
    except ValueError:
        return escape(standing)
    if st is Standing.ACTIVE:
        return st.words
    return f"[yellow]{st.words}[/]: {escape(st.advice)}"


def register(app: typer.Typer) -> None:
    app.command()(status)


def _chain(st: dict[str, Any]) -> str:
    if not st["chain_ok"]:
        return "[red]unreachable, retrying[/]"
    heads = st.get("chain_heads", "off")
    if heads == "pushed":
        return "reachable, new blocks pushed"
    if heads == "lost":
        return "reachable, [yellow]polling: the websocket for new blocks is down, reconnecting[/]"
    return "reachable, polling"
