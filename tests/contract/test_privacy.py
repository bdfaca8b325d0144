"""Secure aggregation and differential privacy on the chain, through the Python client against a real anvil:
advertised keys (the set every site masks against), the key count a commit quotes, each commit's epsilon,
the recovered dropouts a finalize records, every new guard by its error name and arguments, and the gas of
commit at 8 members."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from chainkit import Consortium, commit, deploy_consortium, elect, finalize, h32, outcomes
from eth_account.signers.local import LocalAccount

from swarmd.ledger import AdvertisedKeys, Devnet, Ledger, Outcome, RoundStatus, errors
from swarmd.ledger.errors import LedgerArgumentError

pytestmark = pytest.mark.chain

COMMIT_GAS_LIMIT = 90_000


@pytest.fixture
def consortium(devnet: Devnet, accounts: list[LocalAccount]) -> Consortium:
    """The usual 3 admitted sites, on a ledger deployed for a task with secure aggregation."""
    return deploy_consortium(devnet, accounts, secure_aggregation=True)


def _keys(r: int, i: int) -> tuple[bytes, bytes]:
    return h32(f"mask-{r}-{i}"), h32(f"enc-{r}-{i}")


def _advertise(sites: list[Ledger], r: int) -> None:
    for i, site in enumerate(sites):
        site.advertise_keys(r, *_keys(r, i))


def _finalize(c: Consortium, r: int, included: Sequence[str], recovered: Sequence[str] = ()) -> None:
    finalize(c, r, h32(f"merged-{r}"), included, recovered)


def test_a_secure_aggregation_round_on_chain(consortium: Consortium) -> None:
    c = consortium
    order = [c.sites[2], c.sites[0], c.sites[1]]
    for site in order:
        site.advertise_keys(0, *_keys(0, c.sites.index(site)))
    # Event order, keys as sent: every peer reads the same set.
    expected = [AdvertisedKeys(s.sender, *_keys(0, c.sites.index(s))) for s in order]  # type: ignore[arg-type]
    assert c.admin.advertised_keys(0) == expected
    assert c.admin.round(0).key_count == 3 and c.admin.round(0).mode == "secure aggregation"

    with pytest.raises(errors.StaleKeys) as exc:
        commit(c.sites[0], 0, h32("u0"), 10, milli_epsilon=1500, key_count=2)
    assert exc.value.error_args == (0, 3, 2)
    for i, site in enumerate(c.sites):
        commit(site, 0, h32(f"u{i}"), 10 + i, milli_epsilon=1500 + i, key_count=3)
    with pytest.raises(errors.KeysClosed) as exc:
        c.sites[1].advertise_keys(0, *_keys(0, 9))  # the first commit closed advertising
    assert exc.value.error_args == (0,)
    assert exc.value.error_args == (0,)

    elect(c, 0)
    info = c.admin.round(0)
    assert info.key_count == 3 and [x.milli_epsilon for x in info.commits] == [1500, 1501, 1502]
    assert [x.epsilon for x in info.commits] == [1.5, 1.501, 1.502]
    dropped = next(s for s in info.committers if s != info.leader)
    survivors = [s for s in info.committers if s != dropped]
    _finalize(c, 0, survivors, [dropped])

    done = c.admin.round(0)
    assert done.status is RoundStatus.FINALIZED and done.key_count == 3  # the mode stays readable
    assert done.recovered == (dropped,) and list(done.included) == survivors
    events = c.admin.events().poll()
    final = next(e for e in events if e.name == "RoundFinalized")
    codes = [Outcome.RECOVERED if s == dropped else Outcome.INCLUDED for s in info.committers]
    assert final.args["outcomes"] == bytes(codes)
    committed = [e.args for e in events if e.name == "Committed"]
    assert [a["milliEpsilon"] for a in committed] == [1500, 1501, 1502]
    assert [e.args["site"] for e in events if e.name == "KeysAdvertised"] == [s.sender for s in order]

    # The next round opens plain: the count is reset, round 0's keys stay readable.
    nxt = c.admin.round(1)
    assert nxt.key_count == 0 and nxt.mode == "plain" and c.admin.advertised_keys(1) == []
    assert c.admin.advertised_keys(0) == expected
    c.sites[0].advertise_keys(1, *_keys(1, 0))  # a new round, a new advertisement
    assert [k.site for k in c.admin.advertised_keys(1)] == [c.sites[0].sender]


def test_advertise_guards(consortium: Consortium) -> None:
    c = consortium
    a = c.sites[0]
    outsider = c.outsiders[0]
    with pytest.raises(errors.NotActiveMember) as exc:
        outsider.advertise_keys(0, *_keys(0, 0))
    assert exc.value.error_args == (outsider.sender,)
    with pytest.raises(errors.WrongRound) as exc:
        a.advertise_keys(1, *_keys(1, 0))
    assert exc.value.error_args == (1, 0)
    with pytest.raises(errors.ZeroKey):
        a.advertise_keys(0, b"\0" * 32, h32("enc"))
    with pytest.raises(errors.ZeroKey):
        a.advertise_keys(0, h32("mask"), b"\0" * 32)
    a.advertise_keys(0, *_keys(0, 0))
    with pytest.raises(errors.AlreadyAdvertised) as exc:
        a.advertise_keys(0, *_keys(0, 5))
    assert exc.value.error_args == (0, a.sender)
    assert c.admin.advertised_keys(0) == [AdvertisedKeys(a.sender, *_keys(0, 0))]  # type: ignore[arg-type]
    # A commit masked before a later advertisement quotes the old count.
    c.sites[1].advertise_keys(0, *_keys(0, 1))
    with pytest.raises(errors.StaleKeys) as exc:
        commit(a, 0, h32("u"), 1, key_count=1)
    assert exc.value.error_args == (0, 2, 1)
    commit(a, 0, h32("u"), 1, key_count=2)
    with pytest.raises(errors.KeysClosed):
        c.sites[2].advertise_keys(0, *_keys(0, 2))


def test_a_plain_task_takes_no_keys(devnet: Devnet, accounts: list[LocalAccount]) -> None:
    """Otherwise any member could advertise and make every plain commit (key count 0) revert StaleKeys."""
    c = deploy_consortium(devnet, accounts)
    assert not c.admin.binding().secure_aggregation
    with pytest.raises(errors.SecureAggregationOff):
        c.sites[0].advertise_keys(0, *_keys(0, 0))
    commit(c.sites[0], 0, h32("u"), 1)
    assert c.admin.round(0).key_count == 0


def test_plain_round_commit_quotes_no_keys(consortium: Consortium) -> None:
    c = consortium
    assert c.admin.binding().secure_aggregation
    with pytest.raises(errors.StaleKeys) as exc:
        commit(c.sites[0], 0, h32("u"), 1, key_count=1)
    assert exc.value.error_args == (0, 0, 1)
    commit(c.sites[0], 0, h32("u0"), 1)  # the daemon's call as it is today: no epsilon, no keys
    commit(c.sites[1], 0, h32("u1"), 2, milli_epsilon=2**32 - 1)  # DP without secure aggregation
    commit(c.sites[2], 0, h32("u2"), 3)
    elect(c, 0)
    with pytest.raises(errors.KeysClosed):
        c.sites[0].advertise_keys(0, *_keys(0, 0))
    info = c.admin.round(0)
    assert [x.milli_epsilon for x in info.commits] == [0, 2**32 - 1, 0]
    assert [x.epsilon for x in info.commits] == [None, (2**32 - 1) / 1000, None]
    finalize(c, 0, h32("m"))
    done = c.admin.round(0)
    assert done.key_count == 0 and done.recovered == () and done.mode == "plain"


def test_finalize_recovered(consortium: Consortium) -> None:
    c = consortium
    _advertise(c.sites, 0)
    for i, site in enumerate(c.sites[:2]):
        commit(site, 0, h32(f"u{i}"), 5, key_count=3)
    c.mine(5)  # the third advertiser never commits: the commit window closes without it
    elect(c, 0)
    info = c.admin.round(0)
    me = c.site(info.leader)  # type: ignore[arg-type]
    other = next(s for s in info.committers if s != info.leader)
    absent = c.sites[2].sender
    with pytest.raises(LedgerArgumentError):  # advertised, never committed: not an account of the round
        me.finalize(0, h32("m"), {**outcomes(c, 0), absent: Outcome.RECOVERED})  # type: ignore[dict-item]
    me.finalize(0, h32("m"), {info.leader: Outcome.INCLUDED, other: Outcome.RECOVERED})  # type: ignore[dict-item]
    done = c.admin.round(0)
    assert done.recovered == (other,) and done.included == (info.leader,) and done.key_count == 3


def test_abandoned_round_keeps_its_key_count(consortium: Consortium) -> None:
    c = consortium
    _advertise(c.sites[:2], 0)
    for i, site in enumerate(c.sites[:2]):
        commit(site, 0, h32(f"u{i}"), 5, key_count=2)
    c.mine(5)
    elect(c, 0)
    for _ in range(2):
        c.mine(5)
        c.admin.reelect(0)
    info = c.admin.round(0)
    assert info.status is RoundStatus.ABANDONED and info.key_count == 2 and info.recovered == ()
    assert c.admin.round(1).key_count == 0


def test_commit_gas_at_eight_members(devnet: Devnet, accounts: list[LocalAccount]) -> None:
    """Gas is deterministic: the costliest commit (keys advertised, a non-zero epsilon) stays in budget."""
    c = deploy_consortium(devnet, accounts, sites=8, min_peers=2, secure_aggregation=True, commit_window=50)
    assert c.admin.contract.functions.MAX_COMMITTERS().call() == 128
    advertise = [int(s.advertise_keys(0, *_keys(0, i))["gasUsed"]) for i, s in enumerate(c.sites)]
    commits = [
        int(commit(s, 0, h32(f"u{i}"), 100 + i, milli_epsilon=2**32 - 1 - i, key_count=8)["gasUsed"])
        for i, s in enumerate(c.sites)
    ]
    elect(c, 0)
    info = c.admin.round(0)
    dropped = [a for a in info.committers if a != info.leader][-2:]
    included = [a for a in info.committers if a not in dropped]
    gas = int(finalize(c, 0, h32("m"), included, dropped)["gasUsed"])
    assert max(commits) <= COMMIT_GAS_LIMIT, commits
    assert max(advertise) <= 60_000 and gas <= 150_000, (advertise, gas)
