"""What every command shares: the console, error rendering, and the exit-code mapping."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from swarmd.errors import SwarmError, exit_code

console = Console()
err_console = Console(stderr=True)

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
