"""`swarm admin show | transfer | accept | cancel`: the consortium's admin role, handed on in two steps.

The admin offers the role (`transfer`), the new account takes it (`accept`) from its own site config;
until then the old admin keeps it and may withdraw the offer (`cancel`). A mistyped address therefore
never locks the consortium out.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from swarmd.cli.common import cli_errors, console, print_json
from swarmd.config import load_config

if TYPE_CHECKING:  # web3 loads only when a command runs, not on every `swarm`
    from swarmd.ledger import Ledger

admin_app = typer.Typer(
    help="The consortium's admin role: show it, offer it to another account, accept or cancel the offer.",
    no_args_is_help=True,
)


def _ledger(config: Path) -> Ledger:
    from swarmd.daemon.site import site_ledger

    return site_ledger(load_config(config))


def _state(ledger: Ledger) -> dict[str, str | None]:
    return {"contract": ledger.address, "admin": ledger.admin(), "pending_admin": ledger.pending_admin()}


def _report(ledger: Ledger) -> None:
    state = _state(ledger)
    console.print(f"admin {state['admin']}, pending admin {state['pending_admin'] or 'none'}")


@admin_app.command()
def show(
    config: Path = typer.Option(..., help="Any site's site.toml."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Who holds the admin role, and who it was offered to."""
    with cli_errors():
        ledger = _ledger(config)
        if json_out:
            print_json(_state(ledger))
        else:
            _report(ledger)


def _transact(config: Path, send: Callable[[Ledger], object]) -> None:
    with cli_errors():
        ledger = _ledger(config)
        send(ledger)
        _report(ledger)


@admin_app.command()
def transfer(
    new_admin: str = typer.Argument(..., help="The 0x account to offer the admin role to."),
    config: Path = typer.Option(..., help="The current admin's site.toml."),
) -> None:
    """Offer the admin role to NEW_ADMIN; it becomes admin when it runs `swarm admin accept`."""
    _transact(config, lambda ledger: ledger.transfer_admin(new_admin))
    console.print(f"next: `swarm admin accept --config ...` with the site config of {new_admin}")


@admin_app.command()
def accept(config: Path = typer.Option(..., help="The site.toml of the account offered the role.")) -> None:
    """Take the admin role offered to this site's account."""
    _transact(config, lambda ledger: ledger.accept_admin())


@admin_app.command()
def cancel(config: Path = typer.Option(..., help="The current admin's site.toml.")) -> None:
    """Withdraw the pending offer of the admin role."""
    _transact(config, lambda ledger: ledger.cancel_admin_transfer())


def register(app: typer.Typer) -> None:
    app.add_typer(admin_app, name="admin")
