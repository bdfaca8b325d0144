"""This site's standing on its chain, as the running daemon needs it: its identity, a Ledger client
that signs with it, the check that the ledger is bound to this site's task, and its privacy budget."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from swarmd.config import SiteConfig
from swarmd.errors import ConfigError, TaskError
from swarmd.identity import SiteIdentity, load_identity
from swarmd.ledger import Ledger
from swarmd.task import DPMechanism, Task

if TYPE_CHECKING:
    from swarmd.daemon.dp import SiteBudget
    from swarmd.train import BundleTrainer


def site_identity(cfg: SiteConfig) -> SiteIdentity:
    """The site's keys, unlocked with its passphrase file."""
    return load_identity(cfg.identity.keystore, cfg.identity.passphrase_file, cfg.identity.curve_secret)


def site_ledger(cfg: SiteConfig, identity: SiteIdentity | None = None) -> Ledger:
    """A Ledger client for this site's contract, signing with the site's key."""
    if not cfg.chain.contract:
        raise ConfigError("the site config has no chain.contract", hint="run `swarm join --contract 0x...`")
    ident = identity or site_identity(cfg)
    return Ledger(cfg.chain.rpc_url, cfg.chain.contract, ident.account, poa=cfg.chain.poa)


def check_task_binding(ledger: Ledger, task: Task) -> None:
    """Refuse to work for a ledger bound to another task (or another version of this one), or one that
    admits members by another rule than the task's `swarm.admission` says."""
    binding = ledger.binding()
    bound = binding.task_hash
    if bound != task.hash:
        raise TaskError(
            f"the ledger at {ledger.address} is bound to task 0x{bound.hex()}, "
            f"but this site's task hashes to {task.hash_hex}",
            hint="every site must use the identical swarm.toml and bundle",
        )
    chain_rule = "majority" if binding.majority_admission else "admin"
    if chain_rule != task.swarm.admission:
        raise TaskError(
            f"the ledger at {ledger.address} admits members by {chain_rule}, "
            f"but the task says admission = {task.swarm.admission!r}",
            hint="the ledger was deployed against the task's rule; redeploy it without the override",
        )


def site_budget(task: Task, trainer: BundleTrainer, state_dir: Path) -> SiteBudget | None:
    """This site's DP plan and accountant, or None when the task has no DP; DP-SGD is switched on in the
    trainer. Raises TaskError when the settings cannot work for this site's data (its first round alone
    passes the budget) or the network has layers Opacus cannot train."""
    # Here, not at the top: `swarm join` and `swarm admit` need this module but not torch or Opacus.
    from swarmd.daemon.dp import SiteBudget
    from swarmd.privacy.dp import plan_for
    from swarmd.train import check_private

    check_private(task)
    plan = plan_for(
        task.privacy,
        rounds=task.swarm.rounds,
        local_steps=task.swarm.local_steps,
        n_samples=trainer.n_train,
        batch_size=trainer.batch_size,
        n_sites=task.swarm.min_peers,
        secure_aggregation=task.privacy.secure_aggregation,
    )
    if plan is None:
        return None
    if plan.mechanism is DPMechanism.SAMPLE:
        trainer.make_private(
            noise_multiplier=plan.noise_multiplier, max_grad_norm=plan.clip, sample_rate=plan.sample_rate
        )
    return SiteBudget(task, plan, state_dir)
