"""The operator's path as docs/operator.md tells it, on separate processes and a real anvil, with no
devnet shortcut: `swarm init` x3, `swarm deploy` by the lead (which makes it a member), `swarm join` by
the two others, `swarm admit`, three `swarmd run`. The third site is admitted late, while its daemon
runs: until then it says "pending admission" (status, metric, one log line), then trains without a
restart (min_peers = 3, so no round closes without it). Two rounds finalize with the lead among the
committers, and logs name peers by site. Last, a SIGTERM while a site catches up on
a model no peer can serve (both peers frozen) ends the process within the daemon's stop budget, state
intact."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from swarmd.daemon.lifecycle import STOP_BUDGET
from swarmd.daemon.store import Journal
from swarmd.ledger import Devnet, Ledger
from swarmd.ledger.devnet import anvil_ws_url
from swarmd.ops import DaemonProcess, stop_all, wait_until
from swarmd.train import BUNDLES_DIR
from swarmd.train.demodata import generate_demo_data

pytestmark = [pytest.mark.chain, pytest.mark.slow]

NAMES = ("lead", "site-b", "site-c")
TASK = f"""
[task]
name = "operator-path"
bundle = "{BUNDLES_DIR / "cxr_densenet"}"
seed = 5

[swarm]
rounds = 2
local_steps = 2
min_peers = 3
commit_window = 6
leader_timeout = 8
eval_every = 0
"""
DAEMON_ENV = {"SWARMD_CHAIN_POLL_INTERVAL": "0.25", "SWARMD_TRAIN_DEVICE": "cpu", "SWARMD_TRAIN_THREADS": "1"}


def swarm(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(
        [sys.executable, "-m", "swarmd.cli.swarm", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert (res.returncode == 0) == ok, f"swarm {' '.join(args)}:\n{res.stdout}\n{res.stderr}"
    return res


def swarm_all(*argvs: list[str]) -> list[subprocess.CompletedProcess[str]]:
    """Several `swarm` commands at once (each its own process), in the order given."""
    env = {**os.environ, "COLUMNS": "200"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "swarmd.cli.swarm", *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for argv in argvs
    ]
    out = []
    for argv, p in zip(argvs, procs, strict=True):
        stdout, stderr = p.communicate(timeout=180)
        out.append(subprocess.CompletedProcess(argv, p.returncode, stdout, stderr))
    return out


def _ports() -> int:
    """A port p with p+1 (the bulk port) and p+2 (Prometheus) free too."""
    while True:
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            p = a.getsockname()[1]
            try:
                with socket.socket() as b, socket.socket() as c:
                    b.bind(("127.0.0.1", p + 1))
                    c.bind(("127.0.0.1", p + 2))
                    return p
            except OSError:
                continue


def _init_all(root: Path, dev: Devnet) -> dict[str, tuple[Path, int]]:
    """`swarm init` for the three sites, in parallel: name -> (site.toml, port)."""
    data = generate_demo_data(root / "data", sites=3, task="classification", alpha=1.0, seed=3, n_per_site=12)
    sites, argvs = {}, []
    for i, name in enumerate(NAMES):
        port = _ports()
        (root / f"{name}.key").write_text(dev.dev_keys[i + 1])
        args = ["init", "--dir", str(root / name), "--name", name, "--task", str(root / "swarm.toml")]
        args += [
            "--rpc",
            dev.rpc_url,
            "--ws",
            anvil_ws_url(dev.rpc_url),
            "--endpoint",
            f"tcp://127.0.0.1:{port}",
            "--bind",
            f"tcp://127.0.0.1:{port}",
        ]
        args += ["--data-list", str(data.site_datalists[i]), "--private-key-file", str(root / f"{name}.key")]
        argvs.append([*args, "--kdf-iterations", "1000"])
        sites[name] = (root / name / "site.toml", port)
    done = swarm_all(*argvs)
    assert all(r.returncode == 0 for r in done), done
    assert f"port {sites['lead'][1] + 1} of the same host" in " ".join(
        done[0].stdout.split()
    )  # the bulk port
    return sites


def _account(config: Path) -> str:
    return "0x" + json.loads((config.parent / "keys" / "account.json").read_text())["address"]


def _metric(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port + 2}/metrics", timeout=5) as resp:
        return resp.read().decode()


@pytest.mark.long
def test_operator_path_with_a_late_admission_then_a_prompt_sigterm(swarm_root: Path, devnet: Devnet) -> None:
    root = swarm_root
    (root / "swarm.toml").write_text(TASK)
    sites = _init_all(root, devnet)
    lead, b, c = (sites[n][0] for n in NAMES)

    deployed = swarm("deploy", "--config", str(lead))
    assert "this site (lead) is an active member" in deployed.stdout
    contract = next(w for w in deployed.stdout.split() if w.startswith("0x") and len(w) == 42)
    joined = swarm_all(*(["join", "--config", str(cfg), "--contract", contract] for cfg in (b, c)))
    assert all(j.returncode == 0 and "(pending)" in j.stdout for j in joined), joined

    daemons = [DaemonProcess(n, sites[n][0], root / f"{n}.log") for n in NAMES]
    try:
        for d in daemons:
            d.start({**DAEMON_ENV, "SWARMD_METRICS_BIND": f"127.0.0.1:{sites[d.name][1] + 2}"})
        swarm("admit", _account(b), "--config", str(lead))  # while the daemons start
        # min_peers = 3: the lead and site-b train round 0, then wait for site-c's commit
        _site_c_waits_for_admission(daemons[2], c, sites["site-c"][1])
        swarm("admit", _account(c), "--config", str(lead))
        ledger = Ledger(devnet.rpc_url, contract)
        wait_until(lambda: _all_done(daemons), 240, what="two rounds on every site")
        rounds = [ledger.round(r) for r in range(2)]
        committers = [{x.site for x in info.commits} for info in rounds]
        # the lead trains as a member, and site-c trains once admitted, without a restart
        assert committers == [{_account(x) for x in (lead, b, c)}] * 2
        assert all(info.status.name == "FINALIZED" for info in rounds)
        logs = "".join(d.log.read_text() for d in daemons)
        assert "site-b" in logs and any(f"leader {n}" in logs or f"update from {n}" in logs for n in NAMES)
        _sigterm_while_catching_up(daemons)
    finally:
        for d in daemons:
            if d.alive() and d.pid is not None:
                os.kill(d.pid, signal.SIGCONT)  # a frozen daemon could not heed its SIGTERM
        stop_all(daemons)


def _site_c_waits_for_admission(d: DaemonProcess, config: Path, port: int) -> None:
    st = wait_until(lambda: (s := d.status()) and s.get("membership") == "pending" and s, 90, what="pending")
    assert st["n_samples"] == 0
    wait_until(lambda: (s := d.status()) and s["phase"] == "waiting", 60, what="site-c to wait, not train")
    assert 'swarmd_membership{swarmd_membership="pending"} 1.0' in _metric(port)
    wait_until(lambda: (s := d.status()) and s["chain_heads"] == "pushed", 30, what="the --ws subscription")
    table = swarm("status", "--config", str(config)).stdout
    assert "pending admission" in table and "swarm admit" in table and "new blocks pushed" in table
    pending_lines = [ln for ln in d.log.read_text().splitlines() if "is pending admission" in ln]
    assert len(pending_lines) == 1  # once per change, not once per poll


def _all_done(daemons: list[DaemonProcess]) -> bool:
    for d in daemons:
        if not d.alive():
            raise AssertionError(f"{d.name} exited:\n{d.tail(60)}")
    return all((s := d.status()) is not None and s["phase"] == "done" for d in daemons)


def _sigterm_while_catching_up(daemons: list[DaemonProcess]) -> None:
    """site-c restarts without the final model while both peers are frozen (SIGSTOP: connections open,
    nothing answers), so its fetch can only time out; a SIGTERM ends it within the stop budget."""
    lead, b, c = daemons
    final = c.status()["last_merged_hash"]  # type: ignore[index]
    c.stop()
    state = c.config.parent / "state"
    journal_before = Journal.open(state / "journal.json").rounds
    keys_before = {p.name: p.read_bytes() for p in (c.config.parent / "keys").iterdir()}
    shutil.move(state / "checkpoints" / f"{final}.safetensors", state.parent / "aside.safetensors")
    for d in (lead, b):
        os.kill(d.pid or 0, signal.SIGSTOP)
    pulls = c.log.read_text().count("pulling it from peers")  # the log file outlives the restart
    c.start(DAEMON_ENV)
    wait_until(
        lambda: c.log.read_text().count("pulling it from peers") > pulls,
        90,
        interval=0.25,
        what="the restarted site-c to pull the model from its frozen peers",
    )
    c.terminate()
    assert c.proc is not None
    code = c.proc.wait(timeout=STOP_BUDGET)  # the daemon's own promise, not a tighter figure
    assert code == 0, c.tail(40)
    assert Journal.open(state / "journal.json").rounds == journal_before
    assert {p.name: p.read_bytes() for p in (c.config.parent / "keys").iterdir()} == keys_before
    assert not (state / "control.sock").exists()
