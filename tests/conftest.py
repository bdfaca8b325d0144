"""Shared fixtures: a real anvil devnet, its funded dev accounts, and whole local swarms of real
daemons (`running_swarm`, `swarm_factory`) for tests/e2e and tests/fault.

A task root with a minimal bundle (`root`) serves the task tests.

Suites add their own next to their tests: tests/contract (deployed consortia), tests/unit/train
(generated multi-site data), tests/integration (transport peers as processes). Swarms run on their
own devnets, since several need 1-second blocks.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import traceback
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from hypothesis import settings

from swarmd.daemon.metrics import Metrics
from swarmd.daemon.rounds import RoundDriver
from swarmd.daemon.state import DaemonState
from swarmd.daemon.store import Journal, ModelStore
from swarmd.ledger import Devnet
from swarmd.ops import DemoData, LocalSwarm, local_swarm, task_file
from swarmd.ops.netns import NetnsUnavailable, WanNet, list_namespaces
from swarmd.task import Task, load_task
from swarmd.train import BUNDLES_DIR

# Tests must behave the same on a 2-core CI box and a GPU workstation.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# pytest-xdist's workers run with COLUMNS=80 and LINES=24; a CLI test's console would be built with
# that width and fold its tables. Tests that care about width set COLUMNS themselves.
for _name in ("COLUMNS", "LINES"):
    os.environ.pop(_name, None)

# CI draws the same examples on every run (seeded from each test), so a red CI is reproducible and
# a green one is not luck; a developer's run keeps exploring new examples. Loaded before any test
# module builds its own settings, which inherit from the profile.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

N_DEV_ACCOUNTS = 20


@pytest.fixture(scope="session")
def devnet() -> Iterator[Devnet]:
    """One real anvil (instant blocks) for the whole session; tests deploy fresh contracts on it."""
    with Devnet.start(accounts=N_DEV_ACCOUNTS) as dev:
        yield dev


@pytest.fixture(scope="session")
def accounts(devnet: Devnet) -> list[LocalAccount]:
    return [Account.from_key(k) for k in devnet.dev_keys]


# --- one round driver over fakes (tests/unit/daemon) ----------------------------------------------------
@pytest.fixture
def unit_driver(tmp_path: Path) -> Iterator[Callable[..., RoundDriver]]:
    """`unit_driver(ledger=..., node=..., address=..., poll=..., task=...)`: a RoundDriver over the given
    fakes and no trainer, running the DenseNet example task unless `task` says otherwise, its store and
    journal under tmp_path; every driver built is closed after the test."""
    built: list[RoundDriver] = []

    def build(
        *,
        ledger: object = None,
        node: object = None,
        address: str = "0x" + "1" * 40,
        poll: float = 30.0,
        task: Task | None = None,
        **kwargs: object,
    ) -> RoundDriver:
        state = DaemonState(site="a", address=address)
        d = RoundDriver(
            task=task or load_task(BUNDLES_DIR / "cxr_densenet.swarm.toml"),
            ledger=ledger,  # type: ignore[arg-type]
            node=node,  # type: ignore[arg-type]
            trainer=None,  # type: ignore[arg-type]
            store=ModelStore(tmp_path / "ckpt", problems=state.problems),
            journal=Journal.recover(tmp_path / "journal.json", state.problems),
            state=state,
            metrics=Metrics(),
            poll_interval=poll,
            **kwargs,  # type: ignore[arg-type]
        )
        built.append(d)
        return d

    yield build
    for d in built:
        d.close()


# --- a real local swarm (tests/e2e, tests/fault) ------------------------------------------------
@contextlib.contextmanager
def running_swarm(
    root: Path,
    *,
    sites: int = 3,
    rounds: int = 3,
    block_time: float | None = None,
    start: bool = True,
    commit_window: int = 6,
    leader_timeout: int = 8,
    chain_state: Path | None = None,
    privacy: dict[str, object] | None = None,
    n_per_site: int = 16,
    swarm_settings: dict[str, object] | None = None,
    bundle: str = "cxr_small",
    exchange: dict[str, object] | None = None,
) -> Iterator[LocalSwarm]:
    """A devnet plus `sites` provisioned sites; their daemons started unless start=False; `swarm_settings`
    override the task's [swarm] ones; `bundle` names an example bundle: by default the small CNN, as
    DenseNet121 makes a swarm test 2-10 times slower on 2 cores (the tests that need it name it). On a
    failure each daemon's last log lines are printed: pytest shows them with the test's report."""
    task = task_file(
        root / "swarm.toml",
        name="e2e-cxr",
        bundle=BUNDLES_DIR / bundle,
        seed=7,
        swarm={
            "rounds": rounds,
            "local_steps": 2,
            "min_peers": 2,
            "merge": "fedavg",
            "commit_window": commit_window,
            "leader_timeout": leader_timeout,
            "fanout": 2,
            "eval_every": 0,
            **(swarm_settings or {}),  # a test's own [swarm] settings (a merge rule and its parameters)
        },
        privacy=privacy,
        exchange=exchange,
    )
    data = DemoData(alpha=1.0, seed=3, n_per_site=n_per_site, n_test=16)
    with local_swarm(
        root,
        task,
        sites=sites,
        block_time=block_time,
        data=data,
        start=start,
        chain_state=chain_state,
        fork=True,
    ) as swarm:
        try:
            yield swarm
        except BaseException:
            print(swarm.tails(80))
            raise


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A folder with `bundle/configs/{train,evaluate,other}.json`, as `[task] bundle = "bundle"` names it;
    train.json sets the learning rate (0.1) that SCAFFOLD and FedProx checks read."""
    configs = tmp_path / "bundle" / "configs"
    configs.mkdir(parents=True)
    (configs / "train.json").write_text('{"lr": 0.1}')
    (configs / "evaluate.json").write_text("{}")
    (configs / "other.json").write_text("{}")
    return tmp_path


@pytest.fixture
def swarm_root(tmp_path_factory) -> Path:
    # unix socket paths must stay short: keep the tree near /tmp
    return tmp_path_factory.mktemp("sw")


def run_swarm_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`swarm ARGS...` run in this process, its output captured as a process's would be; the caller checks
    the exit status. In-process because a fresh interpreter spends 4-6 s importing torch and web3 per
    command on 2 cores (the test process holds them already); tests/e2e/test_cli.py and
    test_operator_path.py run the installed entry point in processes of its own."""
    from typer.testing import CliRunner

    from swarmd.cli.swarm import app

    done = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    stderr = done.stderr
    if done.exception is not None and not isinstance(done.exception, SystemExit):
        # what a process would have printed: the traceback of an exception the command let through
        stderr += "".join(traceback.format_exception(done.exception))
    return subprocess.CompletedProcess(["swarm", *args], done.exit_code, done.stdout, stderr)


@pytest.fixture
def swarm_cli():
    """`run_swarm_cli` as a fixture."""
    return run_swarm_cli


@contextlib.contextmanager
def _namespaces(nodes: Mapping[str, int | None], congestion: tuple[str, ...] = ()) -> Iterator[WanNet]:
    wan = WanNet(congestion=congestion)
    try:
        wan.create()
        for name, rate in nodes.items():
            wan.add(name, rate)
    except NetnsUnavailable as exc:
        wan.teardown()
        pytest.skip(f"network namespaces unavailable here: {exc}")
    except BaseException:
        wan.teardown()
        raise
    try:
        yield wan
    finally:
        wan.teardown()
        assert not [ns for ns in list_namespaces() if ns.startswith(wan.tag)]


@pytest.fixture
def namespaces() -> Callable[..., contextlib.AbstractContextManager[WanNet]]:
    """`with namespaces({name: rate in bit/s or None}, congestion=(...)) as wan:` a WanNet with those
    nodes; skips the test, with the reason, where namespaces cannot be made, and checks on the way out
    that none is left."""
    return lambda nodes=None, congestion=(): _namespaces(nodes or {}, congestion)


@pytest.fixture
def swarm_factory():
    """`running_swarm` as a fixture, so test modules need not import the conftest."""
    return running_swarm
