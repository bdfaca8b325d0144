"""`swarm chain besu-kit` writes the kit and reports it; bad input is one named line, no traceback."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from swarmd.cli.swarm import app
from swarmd.ops.besu import decode_extra_data


def test_besu_kit_command(tmp_path) -> None:
    res = CliRunner().invoke(
        app, ["chain", "besu-kit", "--validators", "4", "--out", str(tmp_path / "k"), "--json"]
    )
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    genesis = json.loads((tmp_path / "k" / "genesis.json").read_text())
    assert decode_extra_data(genesis["extraData"]) == [v["address"] for v in doc["validators"]]
    text = CliRunner().invoke(app, ["chain", "besu-kit", "--validators", "1", "--out", str(tmp_path / "one")])
    assert text.exit_code == 0 and "tolerates 0 faulty validator(s)" in text.output


def test_bad_input_is_one_line(tmp_path) -> None:
    res = CliRunner().invoke(
        app, ["chain", "besu-kit", "--validators", "2", "--host", "a", "--out", str(tmp_path)]
    )
    assert res.exit_code != 0 and "UsageError: 1 hosts for 2 validators" in res.output
    assert "Traceback" not in res.output
