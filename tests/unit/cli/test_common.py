"""The CLI's error rendering (one line, the exit code of the error's family, brackets kept) and its console:
full width when not a terminal, so logs and pipes keep every column."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
import typer

from swarmd.cli import common
from swarmd.errors import ConfigError


def test_an_error_message_keeps_its_brackets_and_maps_to_its_exit_code(capsys) -> None:
    with pytest.raises(typer.Exit) as info, common.cli_errors():
        raise ConfigError("[site] name is missing in /etc/swarmd/[x]/site.toml")
    assert info.value.exit_code == ConfigError.exit_code
    err = capsys.readouterr().err
    assert "ConfigError: [site] name is missing in /etc/swarmd/[x]/site.toml" in err
    assert err.count("\n") == 1


def _table_text(width_env: dict[str, str], monkeypatch) -> str:
    from rich.table import Table

    monkeypatch.delenv("COLUMNS", raising=False)
    for k, v in width_env.items():
        monkeypatch.setenv(k, v)
    buf = io.StringIO()  # not a terminal
    t = Table(title="rounds")
    for col in ("round", "status", "merged model"):
        t.add_column(col)
    t.add_row("0", "finalized", "0x" + "ab" * 60)
    common.WideConsole(file=buf).print(t)
    return buf.getvalue()


def test_a_console_that_is_not_a_terminal_prints_tables_whole(monkeypatch) -> None:
    text = _table_text({}, monkeypatch)
    assert "finalized" in text and "0x" + "ab" * 60 in text  # not "finaliz…", not folded
    assert max(map(len, text.splitlines())) > 120


def test_columns_still_sets_the_width_when_given(monkeypatch) -> None:
    text = _table_text({"COLUMNS": "60"}, monkeypatch)
    assert max(map(len, text.splitlines())) <= 60


def test_swarm_in_a_pipe_with_no_columns_prints_every_column_whole(tmp_path) -> None:
    """The real CLI in a subprocess: stdout a pipe, no COLUMNS, stdin not a terminal either."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    args = ["demo-data", "--sites", "2", "--per-site", "4", "--test", "4", "--out", str(tmp_path / "d")]
    res = subprocess.run(
        [sys.executable, "-m", "swarmd.cli.swarm", *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=env,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert "scanner: xgain offset ^gamma ~noise res" in res.stdout  # the last column, whole
    assert "…" not in res.stdout
    assert max(map(len, res.stdout.splitlines())) > 80
