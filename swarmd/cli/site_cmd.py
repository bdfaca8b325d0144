"""`swarm init | deploy | join | admit | remove`: a site's identity and its membership."""

from __future__ import annotations

from pathlib import Path

import typer

from swarmd.cli.common import cli_errors, console, print_json
from swarmd.config import load_config, validate_config, with_chain, write_config
from swarmd.errors import ConfigError, TaskError


def init(
    directory: Path = typer.Option(..., "--dir", help="Site directory: config, keys and state go here."),
    name: str = typer.Option(..., help="Human-readable site name, e.g. 'charite'."),
    task: Path = typer.Option(..., help="The consortium's swarm.toml."),
    rpc_url: str = typer.Option("http://127.0.0.1:8545", "--rpc", help="Ethereum JSON-RPC endpoint."),
    bind: str = typer.Option("tcp://0.0.0.0:7700", help="ZeroMQ address to bind."),
    endpoint: str = typer.Option(
        ..., help="Address peers dial, published on chain, e.g. tcp://site.example:7700."
    ),
    data_list: Path | None = typer.Option(None, help="This site's Decathlon-style datalist JSON."),
    passphrase_file: Path | None = typer.Option(
        None, help="File holding the keystore passphrase; a random one is generated here if absent."
    ),
    private_key_file: Path | None = typer.Option(
        None, help="Import this hex private key instead of generating one."
    ),
    kdf_iterations: int | None = typer.Option(
        None, help="pbkdf2 iterations (default: scrypt). For devnets only."
    ),
    state_dir: Path | None = typer.Option(None, help="State dir (default: DIR/state)."),
) -> None:
    """Create a site identity (Ethereum keystore + CURVE keypair) and its site.toml."""
    from swarmd.ops.provision import create_site, read_private_key, site_config

    with cli_errors():
        cfg = site_config(
            directory,
            name,
            task,
            rpc_url=rpc_url,
            bind=bind,
            endpoint=endpoint,
            data_list=data_list,
            state_dir=state_dir,
            passphrase_file=passphrase_file,
        )
        new = create_site(
            cfg,
            directory.resolve() / "site.toml",
            private_key=read_private_key(private_key_file) if private_key_file else None,
            kdf_iterations=kdf_iterations,
        )
        if new.generated_passphrase:
            console.print(
                f"generated a passphrase in {cfg.identity.passphrase_file} "
                "(keep it safe; systemd: LoadCredential=)"
            )
        console.print(
            f"site [bold]{name}[/] account {new.identity.address}, "
            f"curve key {new.identity.curve.public.decode()}"
        )
        console.print(
            f"wrote {new.path}; next: fund the account, then `swarm join --config {new.path} --contract ...`"
        )


def deploy(
    config: Path = typer.Option(..., help="The deploying (admin) site's site.toml."),
    majority: bool = typer.Option(
        False, help="Admit and remove by majority vote of members instead of an admin."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Deploy SwarmLedger bound to the task's hash and initial model; record it in the config."""
    from swarmd.ops.provision import deploy_task

    with cli_errors():
        cfg = load_config(config)
        ledger = deploy_task(cfg, majority=majority)
        write_config(with_chain(cfg, contract=ledger.address), config)
        b = ledger.binding()
        result = {
            "contract": ledger.address,
            "task_hash": "0x" + b.task_hash.hex(),
            "initial_model_hash": "0x" + b.initial_model_hash.hex(),
            "admission": "majority" if b.majority_admission else "admin",
        }
        if json_out:
            print_json(result)
        else:
            console.print(f"deployed SwarmLedger at [bold]{ledger.address}[/] (recorded in {config})")
            for k, v in result.items():
                console.print(f"  {k}: {v}")


def join(
    config: Path = typer.Option(..., help="This site's site.toml."),
    contract: str | None = typer.Option(None, help="SwarmLedger address (default: the one in the config)."),
) -> None:
    """Ask to join: publish this site's CURVE key and endpoint; an admin or the members then admit it."""
    from swarmd.ops.provision import join_swarm

    with cli_errors():
        cfg = load_config(config)
        if contract:
            cfg = with_chain(cfg, contract=contract)
            validate_config(cfg)  # never record an address the next load would refuse
            write_config(cfg, config)
        if not cfg.chain.contract:
            raise ConfigError("no contract address", hint="pass --contract 0x... (from `swarm deploy`)")
        member = join_swarm(cfg)
        console.print(
            f"join requested for {member.account} ({member.status.name.lower()}) on {cfg.chain.contract}"
        )


def _vote(config: Path, account: str, admit_: bool) -> None:
    from swarmd.daemon.site import site_ledger

    with cli_errors():
        cfg = load_config(config)
        ledger = site_ledger(cfg)
        if admit_:
            ledger.admit(account)
        else:
            ledger.remove(account)
        m = ledger.member(account)
        console.print(f"{account}: {m.status.name.lower()}")


def admit(
    account: str = typer.Argument(..., help="The 0x account of the pending site."),
    config: Path = typer.Option(..., help="The admin's (or a voting member's) site.toml."),
) -> None:
    """Admit a pending site (admin mode), or cast this member's vote for it (majority mode)."""
    _vote(config, account, True)


def remove(
    account: str = typer.Argument(..., help="The 0x account of the member to remove."),
    config: Path = typer.Option(..., help="The admin's (or a voting member's) site.toml."),
) -> None:
    """Remove a member (admin mode), or vote to remove it (majority mode)."""
    _vote(config, account, False)


def register(app: typer.Typer) -> None:
    app.command()(init)
    app.command()(deploy)
    app.command()(join)
    app.command()(admit)
    app.command()(remove)


__all__ = ["TaskError", "register"]
