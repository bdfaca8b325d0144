"""`swarm bench wan`'s refusals: bad options, and a machine where namespaces cannot be made (here faked
by the one boundary, the effective uid) exits non-zero with the reason before anything is started."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from swarmd.cli.swarm import app


def _wan(tmp_path: Path, *args: str) -> tuple[int, str]:
    res = CliRunner().invoke(app, ["bench", "wan", "--out", str(tmp_path / "out"), *args])
    return res.exit_code, res.output


def test_a_bad_rate_is_refused_with_an_example(tmp_path: Path) -> None:
    code, output = _wan(tmp_path, "--rate", "fast")
    assert code == 2 and "not a link rate" in output and "100mbit" in output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args", [("--sites", "1"), ("--rounds", "0"), ("--model", "resnet9")])
def test_sizes_and_models_out_of_range_are_refused(tmp_path: Path, args: tuple[str, str]) -> None:
    code, output = _wan(tmp_path, *args)
    assert code == 2 and "--sites >= 2" in output


def test_without_root_it_says_so_and_exits_non_zero(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("swarmd.ops.netns.os.geteuid", lambda: 1000)
    code, output = _wan(tmp_path, "--sites", "2")
    assert code == 7 and "NetnsUnavailable" in output and "needs root" in output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("leaves", ["0", "257"])
def test_a_leaf_count_out_of_range_is_refused(tmp_path: Path, leaves: str) -> None:
    code, output = _wan(tmp_path, "--topology", "sharded", "--leaves", leaves)
    assert code == 2 and "--leaves" in output
    assert not (tmp_path / "out").exists()
