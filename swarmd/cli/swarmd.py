"""`swarmd`: the site daemon (`swarmd run --config /etc/swarmd/site.toml`)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import typer

from swarmd import __version__
from swarmd.cli.common import cli_errors

app = typer.Typer(name="swarmd", add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True)


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(f"swarmd {__version__}")


@app.command()
def run(
    config: Path = typer.Option(
        Path(os.environ.get("SWARMD_CONFIG", "/etc/swarmd/site.toml")), help="The site config (site.toml)."
    ),
    log_level: str = typer.Option("INFO", help="DEBUG, INFO, WARNING or ERROR."),
) -> None:
    """Run the daemon in the foreground, logging JSON to stderr. SIGTERM stops it gracefully."""
    from swarmd.config import load_config
    from swarmd.daemon.lifecycle import setup_logging

    with cli_errors():
        cfg = load_config(config)
        from swarmd.daemon.faults import active_faults

        faults = active_faults(os.environ, cfg.site.name)  # refused outside the test suite: exit 2
        setup_logging(log_level.upper())
        from swarmd.daemon.app import run as run_daemon

        code = run_daemon(cfg, faults)
    _exit_now_if_threads_linger(code)
    raise typer.Exit(code)


def _exit_now_if_threads_linger(code: int) -> None:
    """The daemon is shut down; a worker thread still inside a chain call or a training step would hold
    the interpreter's exit (it joins them) past the stop budget. Every write is atomic (tmp, fsync,
    rename), so leaving them is safe: flush the log and exit at once."""
    import threading

    busy = [
        t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon and t.is_alive()
    ]
    if busy:
        logging.getLogger("swarmd").info("exiting without joining %d worker thread(s)", len(busy))
        logging.shutdown()
        os._exit(code)


@app.callback()
def _root() -> None:
    """The swarmd site daemon."""


def main() -> None:
    app()


if __name__ == "__main__":
    main()
