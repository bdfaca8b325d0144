"""What every command shares: the console, error rendering, and the exit-code mapping."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import typer
from rich.console import Console, ConsoleDimensions
from rich.markup import escape

from swarmd.errors import SwarmError, exit_code

# Wide enough for any table swarm prints; a table is as wide as its content, never this wide.
UNBOUNDED_WIDTH = 1000


class WideConsole(Console):
    """A console that never cuts a table to fit 80 columns when it writes to a log or a pipe.

    On a terminal it fits the terminal, as rich does; elsewhere the width is COLUMNS when that is set,
    else unbounded: CI logs and `swarm ... | grep` keep every column whole ("finalized", not "finaliz…").
    """

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        if self._width is not None or self.is_terminal or "COLUMNS" in self._environ:
            return size
        return ConsoleDimensions(UNBOUNDED_WIDTH, size.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._width, self._height = new_size


console = WideConsole()
err_console = WideConsole(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


@contextmanager
def cli_errors() -> Iterator[None]:
    """Turn a SwarmError into one red line and its exit code; never a traceback."""
    try:
        yield
    except SwarmError as exc:
        # The message is data (paths, TOML keys like [site]), never markup: rich would eat brackets.
        err_console.print(
            f"[bold red]error:[/] {type(exc).__name__}: {escape(str(exc))}", highlight=False, soft_wrap=True
        )
        raise typer.Exit(exit_code(exc)) from None
    except KeyboardInterrupt:
        err_console.print("interrupted")
        raise typer.Exit(130) from None


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
