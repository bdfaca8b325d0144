"""An undefined held-out metric (AUC on a one-class split) stays visible on the daemon's outputs: the journal
keeps its reason, the Prometheus gauge reads NaN, the control socket carries plain JSON, and `swarm status`
prints "n/a (one class)"."""

from __future__ import annotations

import asyncio
import json
import math
import urllib.request

from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from swarmd.cli.swarm import app
from swarmd.config import load_config
from swarmd.daemon.control import ControlServer
from swarmd.daemon.metrics import Metrics, start_metrics_server
from swarmd.daemon.state import DaemonState
from swarmd.daemon.store import Journal

SITE_TOML = """schema = 1
[site]
name = "site-a"
state_dir = "state"
task = "swarm.toml"
[identity]
keystore = "keys/account.json"
passphrase_file = "keys/pass"
curve_secret = "keys/curve.key"
[chain]
rpc_url = "http://127.0.0.1:8545"
[transport]
bind = "tcp://127.0.0.1:7700"
endpoint = "tcp://127.0.0.1:7700"
"""


def test_the_journal_keeps_the_reason(tmp_path) -> None:
    j = Journal.open(tmp_path / "journal.json")
    j.set_baseline({"auc": "one class"})
    j.update(0, metrics={"auc": "one class", "acc": 0.5})
    json.loads((tmp_path / "journal.json").read_text(), parse_constant=lambda c: 1 / 0)  # no NaN in the file
    again = Journal.read(tmp_path / "journal.json")
    assert again.baseline == {"auc": "one class"}
    assert again.final_metrics() == {"auc": "one class", "acc": 0.5}
    assert again.metric_series()["auc"] == [(-1, "one class"), (0, "one class")]


def test_the_gauge_is_nan_not_absent() -> None:
    metrics = Metrics()
    server = start_metrics_server("127.0.0.1:0", metrics)
    assert server is not None
    try:
        metrics.model_metrics({"auc": "one class", "acc": 0.75})
        with urllib.request.urlopen(server.url, timeout=5) as resp:
            text = resp.read().decode()
    finally:
        server.stop()
    got = {
        s.labels.get("name"): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "swarmd_model_metric"
    }
    assert math.isnan(got["auc"]) and got["acc"] == 0.75


async def test_swarm_status_prints_the_reason(tmp_path) -> None:
    (tmp_path / "site.toml").write_text(SITE_TOML)
    cfg = load_config(tmp_path / "site.toml")
    state = DaemonState("site-a", "0x" + "ab" * 20, metrics={"auc": "one class"}, baseline={"auc": 0.5})
    server = ControlServer(cfg.control_socket, state.snapshot)
    await server.start()
    try:
        runner = CliRunner()
        args = ["status", "--config", str(tmp_path / "site.toml")]
        text = await asyncio.to_thread(runner.invoke, app, args, env={"COLUMNS": "200"})
        raw = await asyncio.to_thread(runner.invoke, app, [*args, "--json"])
    finally:
        await server.stop()
    assert text.exit_code == 0, text.output
    assert "auc=n/a (one class)" in text.output and "auc=0.5000" in text.output
    assert json.loads(raw.output)["metrics"] == {"auc": "one class"}
