"""The commit-reveal election against a real anvil: a round's phases (commit, reveal, elect), every guard by
its Solidity error name and arguments, a withholding committer left out, too few reveals abandoning the
round, and the gas of commit and reveal at 8 members."""

from __future__ import annotations

import pytest
from chainkit import Consortium, commit, deploy_consortium, elect, h32, reveal_all, secret
from eth_abi import encode
from eth_account.signers.local import LocalAccount
from eth_utils import keccak

from swarmd.ledger import Devnet, RoundStatus, errors
from swarmd.ledger.receipt import election_seal

pytestmark = pytest.mark.chain

COMMIT_GAS_LIMIT = 90_000
REVEAL_GAS_LIMIT = 50_000
ELECT_GAS_LIMIT = 150_000


def _commit_all(c: Consortium, r: int, sites=None) -> None:
    for i, site in enumerate(sites if sites is not None else c.sites):
        commit(site, r, h32(f"update-{r}-{i}"), 10 + i)


def test_commit_reveal_elect(consortium: Consortium) -> None:
    c = consortium
    _commit_all(c, 0)
    assert c.admin.can_reveal(0)  # every active member committed: commits closed at the last one
    assert not c.admin.can_elect(0)  # nobody revealed yet
    for i, site in enumerate(c.sites):
        site.reveal(0, secret(str(site.sender), 0))
        info = c.admin.round(0)
        assert info.revealed == tuple(s.sender for s in c.sites[: i + 1])
    assert c.admin.can_elect(0)  # every committer revealed: no need to wait out the window
    receipt = c.admin.elect(0)
    info = c.admin.round(0)
    assert info.status is RoundStatus.ELECTED and info.leader in info.committers
    assert not c.admin.can_reveal(0)
    # The draw is public: the XOR of keccak(secret, site) over the revealers (on top of 1), hashed with the
    # contract, round and term.
    entropy = 1
    for site in info.committers:
        entropy ^= int.from_bytes(keccak(encode(["bytes32", "address"], [secret(site, 0), site])))
    seed = int.from_bytes(
        keccak(
            entropy.to_bytes(32, "big")
            + bytes(12)
            + bytes.fromhex(c.admin.address[2:])
            + (0).to_bytes(32, "big")
            + (1).to_bytes(32, "big")
        )
    )
    assert info.leader == info.committers[seed % 3]
    elected = [e for e in c.admin.events().poll() if e.name == "LeaderElected"]
    assert elected[-1].args["entropy"] == entropy.to_bytes(32, "big")
    assert int(receipt["gasUsed"]) < ELECT_GAS_LIMIT


def test_reveal_guards(consortium: Consortium) -> None:
    c = consortium
    a, b, third = c.sites
    commit(a, 0, h32("a"), 1)
    with pytest.raises(errors.RevealNotOpen) as exc:  # one commit, below minPeers
        a.reveal(0, secret(str(a.sender), 0))
    assert exc.value.error_args == (0,)
    commit(b, 0, h32("b"), 1)
    with pytest.raises(errors.RevealNotOpen):  # 2 of 3 committed, the commit window is still open
        a.reveal(0, secret(str(a.sender), 0))
    c.mine(5)
    assert c.admin.can_reveal(0)
    with pytest.raises(errors.BadReveal) as exc:
        a.reveal(0, h32("not my secret"))
    assert exc.value.error_args == (0, a.sender)
    with pytest.raises(errors.BadReveal):  # b's secret does not open a's seal: the seal binds the site
        a.reveal(0, secret(str(b.sender), 0))
    with pytest.raises(errors.NotCommitter) as exc:
        third.reveal(0, secret(str(third.sender), 0))
    assert exc.value.error_args == (0, third.sender)
    with pytest.raises(errors.WrongRound):
        a.reveal(1, secret(str(a.sender), 1))
    a.reveal(0, secret(str(a.sender), 0))
    with pytest.raises(errors.AlreadyRevealed) as exc:
        a.reveal(0, secret(str(a.sender), 0))
    assert exc.value.error_args == (0, a.sender)
    # b has not revealed: elect waits for the reveal window (10 blocks from the commit window's end).
    assert not c.admin.can_elect(0)
    with pytest.raises(errors.RevealWindowOpen) as exc:
        c.admin.elect(0)
    first = c.admin.round(0).first_commit_block
    assert exc.value.error_args == (0, first + 5 + 10)  # type: ignore[operator]
    c.mine(10)
    with pytest.raises(errors.RevealClosed):  # the window ended: too late to reveal
        b.reveal(0, secret(str(b.sender), 0))
    assert c.admin.can_elect(0)


def test_no_commit_once_a_secret_may_be_revealed(consortium: Consortium) -> None:
    c = consortium
    a, b, late = c.sites
    _commit_all(c, 0, [a, b])
    with pytest.raises(errors.ZeroSeal):
        late.commit(0, h32("late"), 1, seal=b"\0" * 32)
    c.mine(5)  # minPeers committed and the commit window ended: reveals may start, commits are closed
    with pytest.raises(errors.CommitsClosed) as exc:
        commit(late, 0, h32("late"), 1)
    assert exc.value.error_args == (0,)
    reveal_all(c, 0)
    c.admin.elect(0)
    assert c.admin.round(0).committers == (a.sender, b.sender)


def test_a_reveal_closes_commits_even_before_the_window_ends(
    devnet: Devnet, accounts: list[LocalAccount]
) -> None:
    """Every active member committed, one reveals; the admin then admits a new site in the same round.
    Its commit is refused: it could pick its secret knowing a revealed one."""
    c = deploy_consortium(devnet, accounts, sites=3, admitted=2, commit_window=50)
    a, b, newcomer = c.sites
    _commit_all(c, 0, [a, b])
    a.reveal(0, secret(str(a.sender), 0))
    c.admin.admit(newcomer.sender)  # type: ignore[arg-type]
    with pytest.raises(errors.CommitsClosed):
        commit(newcomer, 0, h32("n"), 1)
    b.reveal(0, secret(str(b.sender), 0))
    c.admin.elect(0)  # all committers revealed: no wait, and the round did not stall on the newcomer


def test_a_withholding_committer_cannot_lead(devnet: Devnet, accounts: list[LocalAccount]) -> None:
    c = deploy_consortium(devnet, accounts, sites=4, min_peers=2)
    withholder = c.sites[0]
    for r in range(4):
        _commit_all(c, r)
        elect(c, r, skip={str(withholder.sender)})
        info = c.admin.round(r)
        assert info.leader != withholder.sender and info.leader in info.revealed
        assert not info.has_revealed(str(withholder.sender))
        # A reelection draws from the revealers too.
        c.mine(6)
        c.admin.reelect(r)
        again = c.admin.round(r)
        assert again.leader not in (withholder.sender, info.leader)
        c.mine(6)
        c.admin.reelect(r)
        c.mine(6)
        c.admin.reelect(r)  # the three revealers failed: nobody is left, the withholder is never drawn
        assert c.admin.round(r).status is RoundStatus.ABANDONED


def test_fewer_than_min_peers_reveals_abandon_the_round(devnet: Devnet, accounts: list[LocalAccount]) -> None:
    c = deploy_consortium(devnet, accounts, sites=3, min_peers=2)
    _commit_all(c, 0)
    c.sites[0].reveal(0, secret(str(c.sites[0].sender), 0))
    c.mine(10)
    assert c.admin.can_elect(0)
    c.admin.elect(0)
    info = c.admin.round(0)
    assert info.status is RoundStatus.ABANDONED and info.leader is None
    assert info.revealed == (c.sites[0].sender,)
    assert c.admin.current_round() == 1 and c.admin.round(1).base_hash == c.params.initial_model_hash
    # Nobody reveals at all: abandoned too, never stalled.
    _commit_all(c, 1)
    c.mine(10)
    c.admin.elect(1)
    assert c.admin.round(1).status is RoundStatus.ABANDONED


def test_seal_is_bound_to_site_and_round() -> None:
    s = h32("s")
    site = "0x" + "11" * 20
    other = "0x" + "22" * 20
    assert election_seal(s, site, 0) != election_seal(s, other, 0) != election_seal(s, site, 1)


def test_commit_and_reveal_gas_at_8_members(devnet: Devnet, accounts: list[LocalAccount]) -> None:
    c = deploy_consortium(devnet, accounts, sites=8, min_peers=2, commit_window=50, reveal_window=10)
    worst_commit = worst_reveal = 0
    for r in range(2):  # round 1 rewrites the seal slots round 0 wrote
        for i, site in enumerate(c.sites):
            gas = int(commit(site, r, h32(f"u{r}{i}"), 100 + i, milli_epsilon=2**32 - 1 - i)["gasUsed"])
            worst_commit = max(worst_commit, gas)
        worst_reveal = max(worst_reveal, *(int(t["gasUsed"]) for t in reveal_all(c, r)))
        c.admin.elect(r)
        info = c.admin.round(r)
        c.site(info.leader).finalize(r, h32(f"m{r}"), dict.fromkeys(info.committers, 0))  # type: ignore[arg-type]
    assert worst_commit <= COMMIT_GAS_LIMIT, worst_commit
    assert worst_reveal <= REVEAL_GAS_LIMIT, worst_reveal
    print(f"commit {worst_commit} reveal {worst_reveal}")
