"""The round driver's answers to peers, before any byte of an update moves (the full round runs in
tests/e2e): an offer for a term we are not collecting wakes our chain poll, an update we already
hold is refused as held, and the sender side reads check_offer's refusals like the handler's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import torch

from swarmd.codec import Manifest
from swarmd.daemon.exchange import Exchange
from swarmd.daemon.leader import HandlerSlot
from swarmd.daemon.metrics import Metrics
from swarmd.daemon.rounds import TRANSIENT_REFUSALS, RoundDriver
from swarmd.daemon.state import DaemonState, Phase
from swarmd.daemon.store import Journal, ModelStore
from swarmd.errors import DaemonError
from swarmd.ledger import Member, MemberStatus
from swarmd.ledger import errors as reverts
from swarmd.merge import rule_for
from swarmd.task import load_task
from swarmd.train import BUNDLES_DIR
from swarmd.transport import Refusal, UpdateHeader

ME, PEER = "0xLeader", "0xPeer"
PEER_KEY = b"\x07" * 32


@pytest.fixture
async def driver(tmp_path) -> AsyncIterator[RoundDriver]:
    task = load_task(BUNDLES_DIR / "cxr_densenet.swarm.toml")
    d = RoundDriver(
        task=task,
        ledger=None,  # type: ignore[arg-type]
        node=None,  # type: ignore[arg-type]  # these answers never reach the transport or the trainer
        trainer=None,  # type: ignore[arg-type]
        store=ModelStore(tmp_path / "ckpt"),
        journal=Journal.open(tmp_path / "journal.json"),
        state=DaemonState(site="a", address=ME),
        metrics=None,  # type: ignore[arg-type]
        poll_interval=30.0,
    )
    d.peers.update([Member(PEER, PEER_KEY, "tcp://peer", MemberStatus.ACTIVE)])
    yield d
    d.close()


def _offer(r: int, term: int) -> UpdateHeader:
    return UpdateHeader(round=r, term=term, digest=b"\2" * 32, manifest=Manifest(()))


def _open_exchange(d: RoundDriver, r: int, term: int) -> Exchange:
    base = {"w": torch.zeros(3)}
    d.exchange = Exchange(
        round=r,
        term=term,
        expected={ME: (b"\1" * 32, 4), PEER: (b"\2" * 32, 4)},
        base=base,
        rule=rule_for(d.task.swarm),
        is_diff=False,
    )
    return d.exchange


async def test_offer_before_we_saw_our_election_is_not_ready_and_wakes_the_chain_poll(driver):
    sleeping = asyncio.ensure_future(driver.sleep(30.0))
    await asyncio.sleep(0)
    verdict = driver.check_offer(PEER_KEY, _offer(2, 1))
    assert (verdict.ok, verdict.reason) == (False, "not_ready")
    await asyncio.wait_for(sleeping, timeout=1.0)  # woke now, not after the 30 s poll


async def test_offer_for_an_open_exchange_is_admitted_unless_already_held(driver):
    ex = _open_exchange(driver, r=2, term=1)
    assert driver.check_offer(PEER_KEY, _offer(2, 1)).ok
    assert driver.check_offer(PEER_KEY, _offer(2, 2)).reason == "not_ready"
    ex.received[PEER] = b"\2" * 32  # stored before a crash, folded in again after the restart
    held = driver.check_offer(PEER_KEY, _offer(2, 1))
    assert (held.ok, held.reason) == (False, "duplicate")


def test_sender_retries_only_refusals_that_say_nothing_about_its_update():
    # not open yet, busy, or a stream that broke on the way: worth another try while the term lasts
    transient = {Refusal.NOT_READY, Refusal.BUSY, Refusal.STREAM_CAP, Refusal.STALLED, Refusal.CANCELLED}
    assert transient <= TRANSIENT_REFUSALS
    # a refusal of the update itself would only repeat
    final = {Refusal.HASH_MISMATCH, Refusal.TOO_LARGE, Refusal.INVALID, Refusal.NOT_MEMBER, Refusal.DUPLICATE}
    assert not final & TRANSIENT_REFUSALS


async def test_a_revert_that_means_another_site_won_the_race_is_benign_and_others_are_not(driver):
    def commit(r: int) -> int:
        raise reverts.AlreadyCommitted((r,))

    def admit(account: str) -> None:
        raise reverts.NotAdmin(())

    assert await driver.transact(commit, 3) is None
    with pytest.raises(reverts.NotAdmin):
        await driver.transact(admit, "0xSomeone")


async def test_the_node_reaches_the_driver_through_the_slot_it_was_built_with(driver):
    slot = HandlerSlot()  # given to the node before the driver exists
    with pytest.raises(DaemonError):
        slot.check_offer(PEER_KEY, _offer(2, 1))
    slot.bind(driver)
    _open_exchange(driver, r=2, term=1)
    assert slot.check_offer(PEER_KEY, _offer(2, 1)).ok
    assert slot.serve_model(rb"\9" * 32) is None  # not a model the chain lists


async def test_phases_are_journaled_with_their_first_entry_and_time_spent(driver, monkeypatch) -> None:
    now = [99.0]
    monkeypatch.setattr("time.time", lambda: now[0])
    driver.metrics = Metrics()
    driver.state.phase_since = 99.0
    for t, phase, r in [
        (100.0, Phase.SYNC, 2),  # leaves STARTING, which belongs to no round
        (101.0, Phase.TRAIN, 2),
        (103.0, Phase.ELECT, 2),
        (104.5, Phase.TRAIN, 2),  # entered again: the first entry stays
        (106.0, Phase.SYNC, 3),  # round 3 begins
    ]:
        now[0] = t
        driver.set_phase(phase, r)
    two, three = Journal.read(driver.journal.path).get(2), driver.journal.get(3)
    assert two.entered == {"sync": 100.0, "train": 101.0, "elect": 103.0}
    assert two.phases == {"sync": 1.0, "train": 3.5, "elect": 1.5}
    assert three.entered == {"sync": 106.0} and -1 not in driver.journal.rounds
