"""Operator tooling the running daemon never calls (it sits above `daemon/`, which never imports it).

provision.py   one site: create its identity and site.toml, deploy a task's ledger, join
consortium.py  a whole consortium on one machine: ledger, N sites, generated data, admitted
launcher.py    site daemons as local subprocesses: start, status, stop in parallel
local.py       `local_swarm()`: anvil + consortium + daemons as one context manager
sitedata.py    what a devnet's sites train on: `--data SITE=DATALIST` checked, or generated data that fits
taskedit.py    a task file derived from another (settings overridden, every other table kept)
chain.py       a chain-only devnet, and funding an account on a devnet
report.py      a swarm's results read back: journals and chain as a plot, per-site scores
export.py      a merged model as a MONAI bundle, checked against the chain
netns.py       a WAN on one machine: network namespaces on a bridge, links shaped by tc (`swarm bench wan`)
dispute.py     a kept delivery receipt checked against the chain and published (`swarm ledger dispute`)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from swarmd.ops.consortium import LocalConsortium, LocalSite, local_consortium
    from swarmd.ops.launcher import DaemonProcess, stop_all, wait_until
    from swarmd.ops.local import (
        DemoData,
        LocalSwarm,
        OwnData,
        local_swarm,
        private_task,
        recorded_devnet,
        task_file,
    )
    from swarmd.ops.provision import NewSite, create_site, deploy_task, join_swarm, site_config
    from swarmd.ops.sitedata import devnet_data, own_data
    from swarmd.ops.taskedit import derived_task

# Loaded on first use: `swarm join` or `swarm admit` needs provision.py alone, and the consortium's
# modules pull in torch and MONAI (seconds of start-up for every command an operator types).
_HOME = {
    "LocalConsortium": "consortium", "LocalSite": "consortium", "local_consortium": "consortium",
    "DaemonProcess": "launcher", "stop_all": "launcher", "wait_until": "launcher",
    "DemoData": "local", "LocalSwarm": "local", "OwnData": "local", "local_swarm": "local",
    "private_task": "local", "recorded_devnet": "local", "task_file": "local",
    "NewSite": "provision", "create_site": "provision", "deploy_task": "provision",
    "join_swarm": "provision", "site_config": "provision",
    "devnet_data": "sitedata", "own_data": "sitedata",
    "derived_task": "taskedit",
}  # fmt: skip


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'swarmd.ops' has no attribute {name!r}")
    return getattr(importlib.import_module(f"swarmd.ops.{home}"), name)


__all__ = [
    "DaemonProcess",
    "DemoData",
    "LocalConsortium",
    "LocalSite",
    "LocalSwarm",
    "NewSite",
    "OwnData",
    "create_site",
    "deploy_task",
    "derived_task",
    "devnet_data",
    "join_swarm",
    "local_consortium",
    "local_swarm",
    "own_data",
    "private_task",
    "recorded_devnet",
    "site_config",
    "stop_all",
    "task_file",
    "wait_until",
]
