"""The operator's CLI path against a real anvil: init, deploy, join, admit, ledger queries; and the
one-line, non-zero, traceback-free answers to bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from eth_account import Account

from swarmd.ledger import Devnet, Ledger
from swarmd.ops import LocalConsortium, wait_until
from swarmd.ops.local import CHAIN_STATE
from swarmd.train import BUNDLES_DIR

pytestmark = [pytest.mark.chain, pytest.mark.slow]

TASK = f"""
[task]
name = "cli-test"
bundle = "{BUNDLES_DIR / "cxr_small"}"

[swarm]
rounds = 2
min_peers = 2
"""


def swarm(*args: str, ok: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(
        [sys.executable, "-m", "swarmd.cli.swarm", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )
    if ok:
        assert res.returncode == 0, f"swarm {' '.join(args)} failed:\n{res.stdout}\n{res.stderr}"
    else:
        assert res.returncode != 0, f"swarm {' '.join(args)} should have failed:\n{res.stdout}"
        assert "Traceback" not in res.stderr + res.stdout
    return res


def _init(tmp: Path, dev: Devnet, name: str, key_index: int, port: int) -> Path:
    key = tmp / f"{name}.key"
    key.write_text(dev.dev_keys[key_index])
    swarm(
        "init",
        "--dir",
        str(tmp / name),
        "--name",
        name,
        "--task",
        str(tmp / "swarm.toml"),
        "--rpc",
        dev.rpc_url,
        "--endpoint",
        f"tcp://127.0.0.1:{port}",
        "--bind",
        f"tcp://127.0.0.1:{port}",
        "--private-key-file",
        str(key),
        "--kdf-iterations",
        "1000",
    )
    return tmp / name / "site.toml"


def test_operator_path_init_deploy_join_admit_and_ledger(tmp_path, devnet):
    (tmp_path / "swarm.toml").write_text(TASK)
    admin = _init(tmp_path, devnet, "lead", 1, 47100)
    sites = [_init(tmp_path, devnet, f"site{i}", 2 + i, 47110 + 2 * i) for i in range(2)]
    deployed = json.loads(swarm("deploy", "--config", str(admin), "--json").stdout)
    contract = deployed["contract"]
    assert deployed["admission"] == "admin" and deployed["task_hash"].startswith("0x")
    assert deployed["member"] == "active"  # the lead is a member: it trains too
    accounts = []
    for cfg in sites:
        swarm("join", "--config", str(cfg), "--contract", contract)
        accounts.append(
            json.loads(swarm("ledger", "members", "--config", str(cfg), "--json").stdout)[-1]["account"]
        )
    pending = json.loads(swarm("ledger", "members", "--config", str(admin), "--json").stdout)
    assert [m["status"] for m in pending] == ["active", "pending", "pending"]
    for account in accounts:
        swarm("admit", account, "--config", str(admin))
    members = json.loads(
        swarm("ledger", "members", "--rpc", devnet.rpc_url, "--contract", contract, "--json").stdout
    )
    lead = members[0]["account"]
    assert sorted(m["account"] for m in members if m["status"] == "active") == sorted([lead, *accounts])
    assert [m["name"] for m in members] == ["lead", "site0", "site1"]  # published at join
    table = swarm("ledger", "members", "--config", str(admin)).stdout
    assert "3 active" in table and accounts[0] in table and "site1" in table
    rounds = json.loads(swarm("ledger", "rounds", "--config", str(admin), "--json").stdout)
    assert rounds[0]["round"] == 0 and rounds[0]["status"] == "open"
    csv_text = swarm("ledger", "export", "--format", "csv", "--config", str(admin)).stdout
    assert csv_text.splitlines()[0].startswith("round,status,term,leader,site")

    # bad input: named, one line, non-zero, nothing half-written
    again = swarm("admit", accounts[0], "--config", str(admin), ok=False)
    assert "NotPending" in again.stderr
    dup = swarm("join", "--config", str(sites[0]), ok=False)
    assert "AlreadyMember" in dup.stderr
    missing = swarm("join", "--config", str(tmp_path / "nope.toml"), ok=False)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    bad_round = swarm("ledger", "round", "99", "--config", str(admin), ok=False)
    assert "does not exist" in bad_round.stderr
    exists = swarm(
        "init",
        "--dir",
        str(tmp_path / "site0"),
        "--name",
        "x",
        "--task",
        str(tmp_path / "swarm.toml"),
        "--endpoint",
        "tcp://127.0.0.1:1",
        ok=False,
    )
    assert "already exists" in exists.stderr
    assert sorted(p.name for p in (tmp_path / "site0" / "keys").iterdir()) == [
        "account.json",
        "curve.key",
        "passphrase",
    ]


def test_unreachable_chain_is_one_line(tmp_path):
    res = swarm("ledger", "members", "--rpc", "http://127.0.0.1:9", "--contract", "0x" + "11" * 20, ok=False)
    assert res.returncode == 6 and "ChainUnavailable" in res.stderr
    assert len(res.stderr.strip().splitlines()) <= 2


def test_a_malformed_rpc_url_is_one_line():
    res = swarm("ledger", "members", "--rpc", "not a url", "--contract", "0x" + "00" * 19 + "01", ok=False)
    assert res.returncode == 2 and "ConfigError: RPC URL is not a URL: 'not a url'" in res.stderr
    assert len(res.stderr.strip().splitlines()) <= 2


def test_wrong_format_is_a_usage_error():
    res = swarm(
        "ledger",
        "export",
        "--format",
        "xml",
        "--rpc",
        "http://127.0.0.1:9",
        "--contract",
        "0x" + "11" * 20,
        ok=False,
    )
    assert res.returncode == 2 and "json or csv" in res.stderr


def test_devnet_run_shows_the_swarm_then_up_members_down(swarm_root):
    """`swarm devnet run` (the demo's command) on 2 sites for 1 round, kept up with --keep: the
    ledger shows the finalized round, a second `up` refuses, and `down` stops daemons and chain."""
    root, task = swarm_root / "dn", swarm_root / "swarm.toml"
    task.write_text(TASK.replace("rounds = 2", "rounds = 1\nlocal_steps = 2"))
    args = ("--sites", "2", "--task", str(task), "--block-time", "0", "--no-local-baseline", "--keep")
    run = swarm("devnet", "run", "--dir", str(root), *args, "--timeout", "240", timeout=300)
    try:
        lines = [ln.strip() for ln in run.stdout.splitlines()]
        assert "rounds" in lines, run.stdout  # the ledger's table, its title on a line of its own
        assert "held-out test set (never trained on)" in lines
        assert "1 round finalized (0); final model: round 0; round 1 open" in " ".join(run.stdout.split())
        assert (root / "swarm.png").stat().st_size > 0
        assert "recomputed 1 finalized round from the committed updates: 1 verified" in " ".join(
            run.stdout.split()
        )
        members = json.loads(swarm("ledger", "members", "--devnet", str(root), "--json").stdout)
        assert [m["status"] for m in members] == ["active", "active"]
        r0 = json.loads(swarm("ledger", "round", "0", "--devnet", str(root), "--json").stdout)
        assert r0["status"] == "finalized" and len(r0["included"]) == 2
        daemons = [int(p) for p in json.loads((root / "daemons.json").read_text())["pids"]]
        assert len(daemons) == 2 and all(_alive(p) for p in daemons)
        again = swarm("devnet", "up", "--dir", str(root), "--sites", "2", ok=False)
        assert "already up" in again.stderr
    finally:
        swarm("devnet", "down", "--dir", str(root))
    gone = swarm("ledger", "members", "--devnet", str(root), ok=False)
    assert "ChainUnavailable" in gone.stderr
    wait_until(lambda: not any(_alive(p) for p in daemons), 30, what="the daemons to stop")
    _chain_survives_down_up_and_a_killed_anvil(root)


def _chain_survives_down_up_and_a_killed_anvil(root: Path) -> None:
    """`devnet up` on a devnet that was stopped, then on one whose anvil was killed (SIGKILL, no clean
    dump): the same ledger comes back, members, finalized round and a write made just before the kill."""
    swarm("devnet", "up", "--dir", str(root), "--block-time", "0")
    try:
        dev, consortium = Devnet.load(root / "devnet.json"), LocalConsortium.load(root)
        ledger = Ledger(dev.rpc_url, consortium.contract)
        assert _ledger_view(ledger) == (["active", "active"], "finalized")
        # the daemons are down: an audit of the devnet reads its sites' stores (held to the commitments)
        audited = swarm("ledger", "audit", "--rounds", "all", "--devnet", str(root))
        assert "round 0: verified" in audited.stdout, audited.stdout
        Ledger(dev.rpc_url, ledger.address, Account.from_key(dev.dev_keys[0])).transfer_admin(
            consortium.sites[0].address
        )
        _wait_for_dumps(root / CHAIN_STATE, 2)  # the second dump began after the write
        os.kill(int(dev.pid or 0), signal.SIGKILL)
        wait_until(lambda: not _alive(int(dev.pid or 0)), 10, what="anvil to die")
        assert not dev.is_running()
        swarm("devnet", "up", "--dir", str(root), "--block-time", "0")
        assert _ledger_view(ledger) == (["active", "active"], "finalized")
        assert ledger.pending_admin() == consortium.sites[0].address
    finally:
        swarm("devnet", "down", "--dir", str(root))


def _ledger_view(ledger: Ledger) -> tuple[list[str], str]:
    return [m.status.name.lower() for m in ledger.members()], ledger.round(0).status.name.lower()


def _wait_for_dumps(state: Path, count: int) -> None:
    seen = [state.stat().st_mtime_ns]

    def dumped() -> bool:
        mtime = state.stat().st_mtime_ns
        if mtime != seen[-1]:
            seen.append(mtime)
        return len(seen) > count

    wait_until(dumped, 20, interval=0.05, what=f"anvil to dump its state {count} times")


def _alive(pid: int) -> bool:
    """Running, and not a zombie: the daemons outlive `devnet run --keep`, so nobody here reaps them."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1]
    except (FileNotFoundError, IndexError):
        return False
    return not state.startswith("Z")
