"""`swarm init | deploy | join | admit | remove`: a site's identity and its membership."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from swarmd.cli.common import cli_errors, console, print_json
from swarmd.config import load_config, validate_config, with_chain, write_config
from swarmd.errors import ConfigError, TaskError

if TYPE_CHECKING:  # web3 loads only when a command runs
    from swarmd.ledger import VoteTally


def init(
    directory: Path = typer.Option(..., "--dir", help="Site directory: config, keys and state go here."),
    name: str = typer.Option(..., help="Human-readable site name, e.g. 'charite'."),
    task: Path = typer.Option(..., help="The consortium's swarm.toml."),
    rpc_url: str = typer.Option("http://127.0.0.1:8545", "--rpc", help="Ethereum JSON-RPC endpoint."),
    ws_url: str = typer.Option(
        "",
        "--ws",
        help="The same node's websocket, e.g. ws://127.0.0.1:8546: new blocks are pushed, so the "
        "daemon reacts to each at once instead of at its next poll. Default: poll only.",
    ),
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
            ws_url=ws_url,
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
        console.print(_ports_note(cfg.transport.bind, cfg.transport.endpoint, cfg.transport.bulk))
        console.print(
            f"wrote {new.path}; next: fund the account, then `swarm join --config {new.path} --contract ...` "
            "(or, for the lead, `swarm deploy`, which makes this site a member)"
        )


def _ports_note(bind: str, endpoint: str, bulk: str) -> str:
    """Which ports peers must reach: the endpoint's, and (bulk "aead") the next one, where model bytes go."""
    if bulk == "curve" or not bind.startswith("tcp://"):
        return f"peers reach this site at {endpoint}"
    port = bind.rsplit(":", 1)[-1]
    nxt = str(int(port) + 1) if port.isdigit() and int(port) > 0 else "next"
    return (
        f"peers reach this site at {endpoint} and, for model transfers, on port {nxt} of the same host "
        f"(the bind port + 1; set transport.bulk_bind to move it): open both to the other sites"
    )


def deploy(
    config: Path = typer.Option(..., help="The deploying (admin) site's site.toml."),
    majority: bool | None = typer.Option(
        None,
        "--majority/--admin",
        help="Check the task's swarm.admission is majority (or admin); the task decides, a flag that "
        "disagrees is refused.",
        show_default="the task's swarm.admission",
    ),
    join: bool = typer.Option(
        True,
        "--join/--no-join",
        help="Make this site a member (it asks to join and admits itself). --no-join: an admin-only "
        "account that never trains.",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Deploy SwarmLedger bound to the task's hash and initial model; record it in the config. The
    deploying site becomes an active member unless --no-join."""
    from swarmd.ops.provision import deploy_task

    with cli_errors():
        cfg = load_config(config)
        deployed = deploy_task(cfg, majority=majority, join=join)
        ledger = deployed.ledger
        write_config(with_chain(cfg, contract=ledger.address), config)
        b = ledger.binding()
        member = deployed.member
        result = {
            "contract": ledger.address,
            "task_hash": "0x" + b.task_hash.hex(),
            "initial_model_hash": "0x" + b.initial_model_hash.hex(),
            "admission": "majority" if b.majority_admission else "admin",
            "admin": ledger.admin(),
            "member": member.status.name.lower() if member else "none (admin-only, --no-join)",
        }
        if json_out:
            print_json(result)
        else:
            console.print(f"deployed SwarmLedger at [bold]{ledger.address}[/] (recorded in {config})")
            for k, v in result.items():
                console.print(f"  {k}: {v}")
            if member is not None:
                console.print(
                    f"this site ({cfg.site.name}) is an {member.status.name.lower()} member: "
                    "it trains once its daemon runs; no `swarm join` needed here"
                )
            else:
                console.print("this account only administers: it is not a member and will not train")


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
        receipt = ledger.admit(account) if admit_ else ledger.remove(account)
        tally = ledger.vote_tally(receipt)
        m = ledger.member(account)
        console.print(vote_line(account, m.status.name.lower(), tally))


def vote_line(account: str, status: str, tally: VoteTally | None) -> str:
    """What `swarm admit | remove` prints: the account's status, and in majority mode the ballot count."""
    if tally is None:
        return f"{account}: {status}"
    kind = "admission" if tally.admit else "removal"
    verdict = "passed" if tally.passed else f"pending: {tally.needed - tally.votes} more needed"
    return f"{account}: {status} ({kind} votes {tally.votes} of {tally.needed} needed, {verdict})"


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
