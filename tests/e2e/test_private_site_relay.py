"""Issue 18 with real daemons: three sites and the chain in network namespaces made here, joined by veth
pairs to a bridge (`swarmd.ops.netns.WanNet`). Site C (site-c) is private: no listening socket at
all (no ZeroMQ port, no libp2p port), a circuit relay v2 reservation on site A (site-a, a public
member with `relay = true`), its circuit advertised on chain. Every site reaches the chain only over
the namespace network.

A 3-round swarm finalizes with C a committer of every round and the leader of every round: sites A
and B carry the test-only `decline-lead` fault (elected, they do not lead; the others re-elect after
`leader_timeout`), so the contract's election is left as it is. C, leading, takes B's update through
the relay on A and serves the merged model through it. A second test kills the relay mid-transfer.

Skips, with the reason, where namespaces cannot be made or the p2p extra is missing. Marked long: 35-75 s
and 50-110 s alone on 2 loaded cores (each re-election after a declined lead is `leader_timeout`, 10 s)."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("libp2p", reason="the p2p extra is not installed (pip install 'swarmd[p2p]')")

from swarmd.codec import hash_hex
from swarmd.config import MetricsSection, load_config, with_chain, write_config
from swarmd.ledger import Devnet, Ledger, RoundInfo, RoundStatus
from swarmd.ledger.devnet import find_anvil
from swarmd.ops import DaemonProcess, LocalConsortium, local_consortium, stop_all, task_file, wait_until
from swarmd.ops.netns import WanNet, link_counters, parse_rate
from swarmd.train import BUNDLES_DIR

pytestmark = [pytest.mark.slow, pytest.mark.multiproc, pytest.mark.chain, pytest.mark.long]

CHAIN_PORT = 8545
ACCOUNTS = 10
SWARM = {
    "rounds": 3,
    "local_steps": 1,
    "min_peers": 2,
    "merge": "fedavg",
    "commit_window": 6,
    "leader_timeout": 10,
    "fanout": 2,
    "eval_every": 0,
}


@pytest.fixture
def net(request: pytest.FixtureRequest, namespaces) -> Iterator[WanNet]:
    """The namespaces; `request.param` may shape some links ({"a": "1mbit"})."""
    rates: dict[str, str] = getattr(request, "param", {})
    nodes = {name: parse_rate(rates[name]) if name in rates else None for name in ("chain", "a", "b", "c")}
    with namespaces(nodes) as wan:
        yield wan


@dataclass
class NsSwarm:
    """The provisioned consortium, its chain in the chain namespace, its daemons in theirs."""

    net: WanNet
    root: Path
    consortium: LocalConsortium
    daemons: list[DaemonProcess]
    anvil: subprocess.Popen[bytes] | None = None

    def start_chain(self) -> None:
        chain = self.net.nodes["chain"]
        argv = [
            str(find_anvil()), "--host", chain.ip, "--port", str(CHAIN_PORT), "--accounts", str(ACCOUNTS),
            "--block-time", "1", "--load-state", str(self.root / "provisioned.json"),
            "--dump-state", str(self.root / "final.json"),
        ]  # fmt: skip
        with open(self.root / "anvil.log", "ab") as out:
            self.anvil = subprocess.Popen(chain.argv(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        self.net.wait_tcp("a", chain.ip, CHAIN_PORT, timeout=30)

    def stop_chain(self) -> None:
        if self.anvil is not None and self.anvil.poll() is None:
            self.anvil.terminate()  # anvil dumps its state on SIGTERM
            self.anvil.wait(20)

    @contextlib.contextmanager
    def ledger(self) -> Iterator[Ledger]:
        """The chain as it ended, loaded by an anvil on loopback (the test's own namespace has no route
        to the chain's)."""
        self.stop_chain()
        with Devnet.start(accounts=ACCOUNTS, state_file=self.root / "final.json") as dev:
            yield Ledger(dev.rpc_url, self.consortium.contract)

    def done(self) -> bool:
        """Every site has finished its rounds; AssertionError at once when a daemon died."""
        for d in self.daemons:
            assert d.alive(), f"{d.name} exited"
        return all((st := d.status()) is not None and st["phase"] == "done" for d in self.daemons)

    def tails(self) -> str:
        return "\n".join(f"==== {d.name}\n{d.tail(60)}" for d in self.daemons)


def provision(net: WanNet, root: Path) -> NsSwarm:
    """Deploy, join (namespace endpoints; site-c private, site-a its relay) and admit on a loopback anvil,
    whose state the chain namespace's anvil loads; each site.toml points at the chain's namespace address."""
    task = task_file(
        root / "swarm.toml", name="e2e-relay", bundle=BUNDLES_DIR / "cxr_small", seed=7, swarm=SWARM
    )
    sites = [net.nodes[n] for n in ("a", "b", "c")]
    with Devnet.start(accounts=ACCOUNTS, state_file=root / "provisioned.json") as dev:
        consortium = local_consortium(
            root,
            rpc_url=dev.rpc_url,
            dev_keys=list(dev.dev_keys),
            task_path=task,
            sites=3,
            alpha=1.0,
            seed=3,
            n_per_site=16,
            n_test=16,
            base_port=7700,
            hosts=[s.ip for s in sites],
            private_sites=1,
        )
    url = f"http://{net.nodes['chain'].ip}:{CHAIN_PORT}"
    for site in consortium.sites:
        cfg = with_chain(load_config(site.config), rpc_url=url)
        if site is consortium.sites[-1]:  # not even a Prometheus port on loopback: C listens on nothing
            cfg = replace(cfg, metrics=MetricsSection(bind=""))
        write_config(cfg, site.config)
    daemons = [
        DaemonProcess(s.name, s.config, s.config.parent / "swarmd.log", wrap=tuple(n.argv([])))
        for s, n in zip(consortium.sites, sites, strict=True)
    ]
    return NsSwarm(net, root, consortium, daemons)


def listeners(net: WanNet, name: str) -> str:
    return subprocess.run(
        net.nodes[name].argv(["ss", "-Hltn"]), capture_output=True, text=True, check=True
    ).stdout.strip()


def scrape(net: WanNet, name: str, config: Path) -> str:
    """The site's Prometheus page, read from inside its namespace."""
    url = f"http://{load_config(config).metrics.bind}/metrics"
    code = "import sys, urllib.request as u; print(u.urlopen(sys.argv[1], timeout=5).read().decode())"
    argv = net.nodes[name].argv([sys.executable, "-c", code, url])
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30).stdout


def swarm_status(config: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "swarmd.cli.swarm", "status", "--config", str(config), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def declining(swarm: NsSwarm) -> str:
    """The test fault that keeps every site but the private one from leading."""
    return ",".join(f"decline-lead@{s.name}" for s in swarm.consortium.sites[:-1])


def finalized(ledger: Ledger) -> list[RoundInfo]:
    return [i for i in ledger.rounds() if i.status == RoundStatus.FINALIZED]


def test_a_private_site_commits_leads_and_serves_through_a_relay(
    net: WanNet, swarm_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SWARMD_TESTING", "1")  # the daemons inherit it, and PYTEST_CURRENT_TEST
    swarm = provision(net, swarm_root)
    monkeypatch.setenv("SWARMD_TEST_FAULTS", declining(swarm))
    a, b, c = swarm.consortium.sites
    try:
        swarm.start_chain()
        for d in swarm.daemons:
            d.start()
        wait_until(swarm.done, 400, 0.5, what="every site to finish 3 rounds")
        assert listeners(net, "c") == ""  # C accepts no connection at all, over anything
        merged = {d.status()["last_merged_hash"] for d in swarm.daemons}  # type: ignore[index]
        paths_b = swarm_status(b.config)["peer_paths"]
        paths_a = swarm_status(a.config)["peer_paths"]
        page = scrape(net, "b", b.config)
    except BaseException:
        print(swarm.tails())
        raise
    finally:
        stop_all(swarm.daemons, timeout=20)
    with swarm.ledger() as ledger:
        rounds = finalized(ledger)
        assert [i.round for i in rounds] == [0, 1, 2]
        for i in rounds:
            assert c.address in i.included and i.leader == c.address, (i.round, i.leader, i.included)
            assert {a.address, b.address} <= set(i.included)
        assert merged == {hash_hex(rounds[-1].merged_hash)}
    # B reaches C only through A's relay: its update went out, the merged models came in
    to_c = paths_b[c.name]
    assert to_c["path"] == "relayed", paths_b
    assert to_c["bytes_out"].get("relayed", 0) > 0 and to_c["bytes_in"].get("relayed", 0) > 0, to_c
    # A (the relay) talks to C over the connection C opened to hold its reservation
    assert paths_a[c.name]["path"] == "direct" and paths_a[c.name]["bytes_in"].get("direct", 0) > 0, paths_a
    assert f'swarmd_peer_path{{path="relayed",peer="{c.name}"}} 1.0' in page, page[-3000:]
    assert re.search(rf'swarmd_peer_bytes{{direction="in",path="relayed",peer="{c.name}"}} [1-9]', page)


@pytest.mark.parametrize("net", [{"a": "2mbit"}], indirect=True)  # a relayed update takes ~1 s
def test_the_relay_killed_mid_transfer_to_the_private_leader_hangs_nothing(
    net: WanNet, swarm_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL the relay (site A, its link shaped to 2 Mbit/s) while B's update streams through it to C,
    the leader of round 1: B's stream breaks and it cannot reach C until A is back; C finalizes round 1
    (at its deadline, or with B's update if A came back in time); A restarts from its journal, C
    reserves on it again, and the swarm finishes its rounds: round 2 finalizes with more than C, and
    every site, B included, ends with the final model."""
    monkeypatch.setenv("SWARMD_TESTING", "1")
    swarm = provision(net, swarm_root)
    monkeypatch.setenv("SWARMD_TEST_FAULTS", declining(swarm))
    relay, _, leader = swarm.daemons
    _, b, c = swarm.consortium.sites
    try:
        swarm.start_chain()
        for d in swarm.daemons:
            d.start()
        wait_until(
            lambda: (
                (st := leader.status()) is not None
                and (st["round"], st["phase"], st["leader"]) == (1, "exchange", c.address)
            ),
            300,
            0.05,
            what="site-c to lead round 1",
        )
        assert relay.pid is not None
        rx0 = link_counters(relay.pid)[0]
        # B's update is moving: the relay has taken in 10 kB more of it (~200 kB in all; some of it may
        # have passed before rx0 was read)
        wait_until(
            lambda: link_counters(relay.pid)[0] - rx0 > 10_000, 30, 0.02, what="B's update at the relay"
        )
        relay.proc.kill()  # type: ignore[union-attr]
        relay.proc.wait(10)  # type: ignore[union-attr]
        relay.start()
        wait_until(swarm.done, 400, 0.5, what="every site to finish 3 rounds after the relay's restart")
        merged = {d.status()["last_merged_hash"] for d in swarm.daemons}  # type: ignore[index]
    except BaseException:
        print(swarm.tails())
        raise
    finally:
        stop_all(swarm.daemons, timeout=20)
    with swarm.ledger() as ledger:
        rounds = finalized(ledger)
        assert [i.round for i in rounds] == [0, 1, 2]
        assert all(i.leader == c.address for i in rounds)
        assert len(rounds[2].included) >= 2  # a later round finalizes with more than C
        assert merged == {hash_hex(rounds[-1].merged_hash)}
    assert "round 1: cannot deliver to leader site-c" in (b.config.parent / "swarmd.log").read_text()
