"""The CLI's error rendering: one line, the exit code of the error's family, brackets kept."""

from __future__ import annotations

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
