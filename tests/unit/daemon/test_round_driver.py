"""The round driver against faked boundaries (the full round runs in tests/e2e and tests/fault):
its answers to peers before any byte of an update moves (an offer for a term we are not collecting
wakes our chain poll, one from a non-committer or for another hash than the commitment is refused,
one we already hold is refused as held), the stall timeout it derives for an exchange, the member
list it follows between rounds, and the reelect it calls itself while its leader does not answer."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Mapping

import pytest
import torch

from swarmd.codec import Manifest
from swarmd.daemon import rounds
from swarmd.daemon.exchange import Exchange
from swarmd.daemon.leader import MIN_STALL, HandlerSlot, stall_timeout
from swarmd.daemon.metrics import Metrics
from swarmd.daemon.plumbing import StopRequested
from swarmd.daemon.rounds import TRANSIENT_REFUSALS, RoundDriver
from swarmd.daemon.state import Phase
from swarmd.daemon.store import Journal
from swarmd.errors import DaemonError
from swarmd.ledger import (
    CommitInfo,
    ElectionView,
    Member,
    MemberStatus,
    RoundInfo,
    RoundStart,
    RoundStatus,
)
from swarmd.ledger import errors as reverts
from swarmd.merge import rule_for
from swarmd.transport import Limits, PeerId, Refusal, UpdateHeader, Verdict

ME, PEER = "0xLeader", "0xPeer"
PEER_KEY = b"\x07" * 32


@pytest.fixture
def driver(unit_driver) -> RoundDriver:
    d = unit_driver(address=ME)  # its answers here never reach the transport or the trainer
    d.peers.update([Member(PEER, PEER_KEY, "tcp://peer", MemberStatus.ACTIVE)])
    return d


def _offer(r: int, term: int, digest: bytes = b"\2" * 32) -> UpdateHeader:
    return UpdateHeader(round=r, term=term, digest=digest, manifest=Manifest(()))


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
    # No journal write (an fsync) per phase change: the times go to disk with the next change of state.
    assert not driver.journal.path.exists() or Journal.read(driver.journal.path).get(2).entered == {}
    driver.journal.update(3, n_samples=5)
    two, three = Journal.read(driver.journal.path).get(2), driver.journal.get(3)
    assert two.entered == {"sync": 100.0, "train": 101.0, "elect": 103.0}
    assert two.phases == {"sync": 1.0, "train": 3.5, "elect": 1.5}
    assert three.entered == {"sync": 106.0} and -1 not in driver.journal.rounds


async def test_phase_times_are_written_when_the_site_waits_finishes_or_closes(driver) -> None:
    driver.set_phase(Phase.TRAIN, 1)
    driver.set_phase(Phase.DONE, 2)  # the task's last round is over: a wait with no end
    assert "train" in Journal.read(driver.journal.path).get(1).entered
    driver.set_phase(Phase.SYNC, 3)
    driver.close()
    assert Journal.read(driver.journal.path).get(3).entered.keys() == {"sync"}


# --- admission before bytes -----------------------------------------------------------------------
async def test_offers_from_non_committers_or_for_another_hash_are_refused_before_any_byte(driver):
    stranger_key, late_key = b"\x08" * 32, b"\x09" * 32
    driver.peers.update(
        [
            Member(PEER, PEER_KEY, "tcp://peer", MemberStatus.ACTIVE),
            Member("0xLate", late_key, "tcp://late", MemberStatus.ACTIVE),  # a member that did not commit
        ]
    )
    _open_exchange(driver, r=2, term=1)
    wrong = driver.check_offer(PEER_KEY, _offer(2, 1, digest=b"\3" * 32))
    assert (wrong.ok, wrong.reason) == (False, Refusal.WRONG_DIGEST)
    late = driver.check_offer(late_key, _offer(2, 1))
    assert (late.ok, late.reason) == (False, Refusal.NOT_COMMITTER)
    stranger = driver.check_offer(stranger_key, _offer(2, 1))
    assert (stranger.ok, stranger.reason) == (False, Refusal.NOT_MEMBER)
    assert driver.check_offer(PEER_KEY, _offer(2, 1)).ok  # the committer, with its commitment
    # none of these is worth a retry to the sender
    assert not {Refusal.WRONG_DIGEST, Refusal.NOT_COMMITTER, Refusal.NOT_MEMBER} & TRANSIENT_REFUSALS


# --- fakes of the chain and transport boundaries ---------------------------------------------------
def _round(term: int, leader: str, status: RoundStatus = RoundStatus.ELECTED) -> RoundInfo:
    commits = tuple(CommitInfo(a, bytes([i + 1]) * 32, 4, 2) for i, a in enumerate((ME, PEER, "0xThird")))
    return RoundInfo(
        round=2, status=status, term=term, leader=leader, commits=commits, failed_leaders=(),
        base_hash=b"\0" * 32, merged_hash=None, included=(), opened_block=1, first_commit_block=2,
        elected_block=10, finalized_block=None,
    )  # fmt: skip


class FakeLedger:
    """The chain as the driver reads it: a round whose leader times out at `timeout_block`."""

    def __init__(self, members: list[Member]) -> None:
        self.member_list = members
        self.names = {ME: "site-me", PEER: "site-peer"}
        self.block = 10
        self.timeout_block = 10**9
        self.info = _round(1, PEER)
        self.reelected: list[int] = []

    def members(self) -> list[Member]:
        return list(self.member_list)

    def site_names(self) -> dict[str, str]:
        return dict(self.names)

    def block_number(self) -> int:
        self.block += 1
        return self.block

    def round(self, r: int) -> RoundInfo:
        self.block += 1  # every read is one block later: the chain moves while we wait
        return self.info

    def can_reelect(self, r: int) -> bool:
        return self.block > self.timeout_block

    def reelect(self, r: int) -> None:
        self.reelected.append(r)
        self.info = dataclasses.replace(self.info, term=self.info.term + 1, leader="0xThird")


class FakeNode:
    """The transport: a leader that never answers (frozen), and one that accepts."""

    def __init__(self, frozen: set[bytes]) -> None:
        self.frozen = frozen
        self.sent: list[bytes] = []
        self.cancelled = 0
        self.peer_sets: list[set[bytes]] = []
        self.limits = Limits()

    def set_peers(self, peers: Mapping[PeerId, str], labels: Mapping[PeerId, str] | None = None) -> None:
        self.peer_sets.append(set(peers))
        self.labels = dict(labels or {})

    def set_limits(self, limits: Limits) -> None:
        self.limits = limits

    async def send_update(self, peer: PeerId, **kw: object) -> Verdict:
        self.sent.append(peer)
        if peer in self.frozen:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        return Verdict(True)


THIRD_KEY = b"\x0a" * 32
MEMBERS = [
    Member(ME, b"\x06" * 32, "tcp://me", MemberStatus.ACTIVE),
    Member(PEER, PEER_KEY, "tcp://peer", MemberStatus.ACTIVE),
    Member("0xThird", THIRD_KEY, "tcp://third", MemberStatus.ACTIVE),
]


@pytest.fixture
async def committer(unit_driver) -> tuple[RoundDriver, FakeLedger, FakeNode]:
    """A committer of round 2 whose update is stored, with a poll short enough for a unit test."""
    ledger, node = FakeLedger(list(MEMBERS)), FakeNode(frozen={PEER_KEY})
    d = unit_driver(ledger=ledger, node=node, address=ME, poll=0.01)
    d.journal.update(2, update_hash=d.store.put({"w": torch.ones(3)}))
    await d.refresh_members()
    return d, ledger, node


# --- re-election without waiting ---------------------------------------------------------------------
async def test_a_committer_stuck_sending_to_a_frozen_leader_calls_reelect_itself_then_delivers(committer):
    d, ledger, node = committer
    ledger.timeout_block = ledger.block + 2  # the leader's time runs out two polls into the send
    await asyncio.wait_for(d.deliver(2, ledger.info), timeout=5)  # not the send's own 15 s timeout
    assert ledger.reelected == [2] and node.sent == [PEER_KEY] and node.cancelled == 1
    new = await asyncio.wait_for(d.until_settled(2, term=1), timeout=5)
    assert (new.term, new.leader) == (2, "0xThird")
    await asyncio.wait_for(d.deliver(2, new), timeout=5)
    assert node.sent == [PEER_KEY, THIRD_KEY] and d.journal.get(2).delivered_term == 2
    assert ledger.reelected == [2]  # once: the new term is not re-elected


# --- the commit -------------------------------------------------------------------------------------
@pytest.mark.parametrize("mined", [True, False])
async def test_a_mined_commit_is_not_read_back_and_a_benign_revert_is(committer, monkeypatch, mined):
    """The last committer's commit is what every site waits for: its receipt shows it in, so no read of
    the round follows it; a benign revert (AlreadyCommitted after a restart) reads whether ours is in."""
    d, ledger, _node = committer
    monkeypatch.setattr(rounds, "election_seal", lambda secret, site, r: b"\1" * 32)  # ME is no hex address
    ledger.info = _round(0, "", RoundStatus.OPEN)  # our commit is in it, as the chain shows it
    commits: list[int] = []

    def commit(r: int, h: bytes, n: int, **kwargs: object) -> dict[str, int] | None:
        commits.append(r)
        if not mined:
            raise reverts.AlreadyCommitted((r,))
        return {"status": 1}

    reads = []
    plain_round = ledger.round
    ledger.commit = commit  # type: ignore[attr-defined]
    ledger.round = lambda r: (reads.append(r), plain_round(r))[1]  # type: ignore[method-assign]
    assert await d.commit_trained(2, ledger.info, {"w": torch.zeros(3)})
    assert commits == [2] and d.journal.get(2).committed
    assert reads == ([2] if mined else [2, 2])  # the round read before the commit; after it only on a revert


# --- membership is live -------------------------------------------------------------------------------
async def test_a_removed_member_is_cut_off_within_a_chain_poll_mid_round(committer):
    d, ledger, node = committer
    follower = asyncio.ensure_future(d.follow_members())
    try:
        await asyncio.sleep(0.05)
        calls = len(node.peer_sets)
        assert calls == 1  # an unchanged member list is not pushed to the node again
        ledger.member_list = [m for m in MEMBERS if m.account != PEER]  # the admin removes PEER
        for _ in range(100):
            if len(node.peer_sets) > calls:
                break
            await asyncio.sleep(0.01)
        assert node.peer_sets[-1] == {THIRD_KEY}  # the node drops its sessions and streams
        assert PEER_KEY not in d.peers.members and PEER not in d.peers.endpoints
        _open_exchange(d, r=2, term=1)  # PEER had committed, but is no member any more
        assert d.check_offer(PEER_KEY, _offer(2, 1)).reason == Refusal.NOT_MEMBER
        assert d.blocks.seconds_per_block() is not None  # the follower also keeps the block clock
    finally:
        follower.cancel()


async def test_the_member_list_read_aside_holds_up_no_round_read(committer):
    """follow_members reads on a thread of its own: a slow member list does not delay the round's reads
    queued on the chain thread (each new block costs one such read while heads are pushed)."""
    d, ledger, _node = committer
    gate = threading.Event()
    slow = ledger.members
    ledger.members = lambda: (gate.wait(5), slow())[1]  # type: ignore[method-assign]
    aside = asyncio.ensure_future(d.refresh_members(aside=True))
    try:
        info = await asyncio.wait_for(d.chain(ledger.round, 2), timeout=2)
        assert info is ledger.info and not aside.done()
    finally:
        gate.set()
        await asyncio.wait_for(aside, 5)


async def test_a_member_list_read_before_a_newer_one_was_applied_is_dropped(committer):
    """Two reads in flight (the follower's aside, the round's own): the one that started first may hold a
    list from before a removal the later one saw, so it is not applied when it ends last."""
    d, ledger, node = committer
    gate = threading.Event()
    before_removal = list(MEMBERS)
    ledger.members = lambda: (gate.wait(5), before_removal)[1]  # type: ignore[method-assign]
    stale = asyncio.ensure_future(d.refresh_members(aside=True))
    await asyncio.sleep(0.05)
    ledger.members = lambda: [m for m in MEMBERS if m.account != PEER]  # type: ignore[method-assign]
    await asyncio.wait_for(d.refresh_members(), timeout=2)  # the admin removed PEER: applied
    assert PEER not in d.peers.endpoints
    gate.set()
    await asyncio.wait_for(stale, 5)
    assert PEER not in d.peers.endpoints and node.peer_sets[-1] == {THIRD_KEY}


# --- this site's own standing ---------------------------------------------------------------------------
async def test_a_pending_site_waits_reports_it_and_starts_once_admitted(committer):
    d, ledger, node = committer
    assert d.state.membership == "active" and d.state.peer_names[PEER] == "site-peer"
    assert node.labels[PEER_KEY] == "site-peer"  # the transport's log lines name the peer too
    ledger.member_list = [
        dataclasses.replace(m, status=MemberStatus.PENDING) if m.account == ME else m for m in MEMBERS
    ]
    waiting = asyncio.ensure_future(d.until_active())
    for _ in range(100):
        if d.state.membership == "pending":
            break
        await asyncio.sleep(0.01)
    assert d.state.phase == Phase.WAITING and not waiting.done()
    assert 'swarmd_membership{swarmd_membership="pending"} 1.0' in _scrape(d)
    ledger.member_list = list(MEMBERS)  # `swarm admit`
    await asyncio.wait_for(waiting, timeout=5)
    assert d.state.membership == "active"
    assert 'swarmd_membership{swarmd_membership="active"} 1.0' in _scrape(d)


async def test_the_round_after_the_one_played_is_read_with_the_members_in_one_read(committer):
    """Between a finalize and the next training every site reads the members, the round's number and the
    round: one batched read when the round is the one after ours, one at a time when that guess misses."""
    d, ledger, node = committer
    asked: list[int] = []
    removed = [m for m in MEMBERS if m.account != "0xThird"]

    def round_start(r: int) -> RoundStart:
        asked.append(r)
        if r > 2:
            raise reverts.UnknownRound((r,))
        return RoundStart(removed, 2, ledger.info if r == 2 else None)

    ledger.round_start = round_start  # type: ignore[attr-defined]
    ledger.current_round = lambda: 2  # type: ignore[attr-defined]
    d.set_phase(Phase.DISSEMINATE, 1)  # round 1 just ended here
    assert await d.round_to_play() == (2, ledger.info) and asked == [2]
    assert THIRD_KEY not in d.peers.members and node.peer_sets[-1] == {PEER_KEY}  # members applied
    d.set_phase(Phase.TRAIN, 2)  # round 2 went wrong here and is still open: the guess (3) misses
    assert await d.round_to_play() == (2, None) and asked == [2, 3]
    d.set_phase(Phase.DONE, 2)  # the task's rounds are over: the current round is asked for as it is
    assert await d.round_to_play() == (2, ledger.info) and asked == [2, 3, 2]


async def test_a_stop_abandons_a_wait_that_cannot_end(committer):
    """A model fetch from a peer that never answers must not hold a SIGTERM for its timeouts."""
    d, _, _ = committer
    assert await d.interruptible(asyncio.sleep(0, result=7)) == 7
    hung = asyncio.ensure_future(asyncio.Event().wait())
    waiting = asyncio.ensure_future(d.interruptible(hung))
    await asyncio.sleep(0.01)
    d.stopping.set()
    with pytest.raises(StopRequested):
        await asyncio.wait_for(waiting, timeout=5)
    assert hung.cancelled()


def _scrape(d: RoundDriver) -> str:
    from prometheus_client import generate_latest

    return generate_latest(d.metrics.registry).decode()


# --- stalls dropped well before the deadline ------------------------------------------------------------
def test_stall_timeout_fits_the_stalls_a_committer_can_cause_before_the_deadline():
    lim = Limits()
    # plenty of time: the node's own setting
    assert stall_timeout(600.0, 1 << 20, 3, lim, ceiling=20.0) == 20.0
    # 30 s left, 4 senders of 8 MiB at 8 MiB/s: 26 s shared by 2 * streams_per_peer + 2 stalls
    assert stall_timeout(30.0, 8 << 20, 4, lim, ceiling=20.0) == pytest.approx(26.0 / 6)
    # almost no time: never below one chunk's time (twice) or MIN_STALL
    assert stall_timeout(1.0, 1 << 20, 3, lim, ceiling=20.0) == MIN_STALL
    big_chunks = Limits(chunk_size=32 << 20)
    assert stall_timeout(1.0, 1 << 30, 3, big_chunks, ceiling=60.0) == pytest.approx(2 * 32 / 8)


async def test_the_leader_shortens_the_stall_timeout_from_the_blocks_left_and_their_pace(committer):
    d, ledger, node = committer
    now = asyncio.get_running_loop().time()
    d.blocks.saw(100, now - 10.0)
    d.blocks.saw(110, now)  # one block a second
    ledger.block = 11  # read as 12: elected at 10, the deadline is 2/3 of leader_timeout later
    deadline = d.deadline_block(ledger.info)
    await d.limit_stalls(ledger.info, 1 << 20, ceiling=node.limits.stall_timeout)
    seconds_left = deadline - 12
    want = stall_timeout(seconds_left, 1 << 20, 2, Limits(), ceiling=Limits().stall_timeout)
    assert node.limits.stall_timeout == pytest.approx(want) and want < Limits().stall_timeout


async def test_the_exchange_takes_offers_only_once_the_shorter_stall_timeout_is_in_place(committer):
    d, ledger, node = committer
    seen: list[object] = []

    async def limit_stalls(info: RoundInfo, update_bytes: int, ceiling: float) -> None:
        seen.append(d.exchange)  # a stream admitted now would start with the node's old limits
        node.set_limits(dataclasses.replace(node.limits, stall_timeout=2.0))
        raise asyncio.CancelledError  # enough of the exchange: we only look at its opening

    d.limit_stalls = limit_stalls  # type: ignore[method-assign]
    with pytest.raises(asyncio.CancelledError):
        await d.lead(2, dataclasses.replace(ledger.info, leader=ME), {"w": torch.zeros(3)})
    assert seen == [None]
    assert d.exchange is None and node.limits.stall_timeout == Limits().stall_timeout  # restored


# --- the sharded exchange opened before the election ---------------------------------------------------
async def test_a_sharded_exchange_opens_on_the_commits_read_once_they_closed_before_our_reveal(
    committer, monkeypatch
):
    d, ledger, _node = committer
    everyone = _round(0, "", RoundStatus.OPEN)
    d.journal.update(2, election_secret="0x" + "11" * 32)
    # One read shows our commit alone (commits still open); the next, with canReveal (read for the next
    # block), all but the last commit: it is mined with that next block, which every commit is in.
    views = [
        ElectionView(dataclasses.replace(everyone, commits=everyone.commits[:1]), False, False),
        ElectionView(dataclasses.replace(everyone, commits=everyone.commits[:2]), True, False),
    ]
    opened: list[tuple[str, ...]] = []
    steps: list[str] = []

    def election_view(r: int) -> ElectionView:
        return views.pop(0) if views else ElectionView(_round(1, PEER), False, False)

    def reveal(r: int, secret: bytes) -> None:
        steps.append("reveal")

    async def open_shards_early(r: int, info: RoundInfo) -> None:
        steps.append("open")
        opened.append(tuple(c.site for c in info.commits))

    def round_at(r: int, block: str = "latest") -> RoundInfo:
        assert block == "pending"
        return everyone

    ledger.election_view = election_view  # type: ignore[attr-defined]
    ledger.reveal = reveal  # type: ignore[attr-defined]
    ledger.round = round_at  # type: ignore[method-assign]
    monkeypatch.setattr(RoundDriver, "sharded", property(lambda self: True))
    d.open_shards_early = open_shards_early  # type: ignore[method-assign]
    info = await asyncio.wait_for(d.until_elected(2), timeout=5)
    assert info.status == RoundStatus.ELECTED
    assert steps == ["open", "reveal"]  # the exchange does not wait for our reveal's transaction
    assert opened == [(ME, PEER, "0xThird")]  # every committer: none of them is refused as a stranger


# --- waiting for a term's end ------------------------------------------------------------------------
async def test_a_term_is_watched_head_by_head_when_the_node_pushes_heads(committer):
    """While a term plays out, a committer reads the chain again at each pushed head (or a peer's
    nudge), not every poll: nothing it reads changes without a block. Without pushed heads it polls."""
    d, ledger, _node = committer  # poll 0.01 s
    reads: list[int] = []
    elected = ledger.info

    def round_read(r: int) -> RoundInfo:
        reads.append(r)
        return ledger.info

    ledger.round = round_read  # type: ignore[method-assign]
    d.state.chain_heads = "pushed"
    settled = asyncio.ensure_future(d.until_settled(2, elected.term))
    await asyncio.sleep(0.3)
    assert len(reads) == 1  # polled every 0.01 s, it would have read about 30 times
    d.saw_head(11)
    await asyncio.sleep(0.05)
    assert len(reads) == 2 and not settled.done()
    ledger.info = dataclasses.replace(elected, status=RoundStatus.FINALIZED)
    d.saw_head(12)
    assert (await asyncio.wait_for(settled, timeout=5)).status == RoundStatus.FINALIZED

    reads.clear()
    ledger.info = elected
    d.state.chain_heads = "lost"  # the node's heads stopped: back to polling
    settled = asyncio.ensure_future(d.until_settled(2, elected.term))
    await asyncio.sleep(0.3)
    settled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await settled
    assert len(reads) > 5
