"""Membership against a real anvil: join, admit, remove, endpoints, and majority voting with its
bootstrap phase (the admin role itself: test_admin.py). Reverts are asserted by error name and arguments."""

from __future__ import annotations

import pytest
import requests
import zmq
from chainkit import Consortium, commit, curve_key, deploy_consortium, h32
from eth_account.signers.local import LocalAccount

from swarmd.ledger import Devnet, MemberStatus, VoteTally, errors
from swarmd.ledger.errors import LedgerArgumentError
from swarmd.ops import wait_until

pytestmark = pytest.mark.chain


def test_join_admit_and_views(devnet: Devnet, accounts: list[LocalAccount]) -> None:
    c = deploy_consortium(devnet, accounts, sites=3, admitted=2)
    members = c.admin.members()
    assert [m.account for m in members] == [s.sender for s in c.sites]
    assert [m.status for m in members] == [MemberStatus.ACTIVE, MemberStatus.ACTIVE, MemberStatus.PENDING]
    assert [m.endpoint for m in members] == [f"tcp://127.0.0.1:{7000 + i}" for i in range(3)]
    assert members[0].curve_key == curve_key(0)
    assert len(members[0].curve_key_z85) == 40
    assert [m.account for m in c.admin.active_members()] == [s.sender for s in c.sites[:2]]
    assert c.admin.member(c.outsiders[0].sender).status is MemberStatus.NONE
    binding = c.admin.binding()
    assert binding == c.params
    info = c.admin.binding_info()
    assert info.admin == c.admin.sender and info.deploy_block > 0
    assert members[0].to_json()["status"] == "active"


def test_join_guards(consortium: Consortium) -> None:
    c = consortium
    site, outsider = c.sites[0], c.outsiders[0]
    with pytest.raises(errors.AlreadyMember) as exc:
        site.request_join(curve_key(99), "tcp://x:1")
    assert exc.value.error_args == (site.sender, MemberStatus.ACTIVE)
    with pytest.raises(errors.InvalidCurveKey):
        outsider.request_join(b"\0" * 32, "tcp://x:1")
    with pytest.raises(errors.CurveKeyTaken) as exc:
        outsider.request_join(curve_key(0), "tcp://x:1")
    assert exc.value.error_args == (curve_key(0), site.sender)
    with pytest.raises(errors.InvalidEndpoint) as exc:
        outsider.request_join(curve_key(50), "")
    assert exc.value.error_args == (0,)
    with pytest.raises(errors.InvalidEndpoint):
        outsider.request_join(curve_key(50), "tcp://" + "x" * 300)
    with pytest.raises(LedgerArgumentError):
        outsider.request_join(b"short", "tcp://x:1")
    # A z85 key (what zmq.curve_keypair returns) is accepted and stored raw.
    public, _ = zmq.curve_keypair()
    outsider.request_join(public, "tcp://10.0.0.9:5555")
    assert c.admin.member(outsider.sender).curve_key_z85 == public


def test_site_names_live_in_the_join_event_and_only_valid_ones_are_read(consortium: Consortium) -> None:
    c = consortium
    outsider = c.outsiders[0]
    with pytest.raises(errors.InvalidName) as exc:
        outsider.request_join(curve_key(70), "tcp://o:1", "x" * 33)
    assert exc.value.error_args == (33,)
    outsider.request_join(curve_key(70), "tcp://o:1", "charite")
    assert c.admin.site_names() == {outsider.sender: "charite"}  # the consortium's sites joined unnamed
    assert c.admin.vote_tally(c.admin.admit(outsider.sender)) is None  # admin mode: no ballot
    c.admin.remove(outsider.sender)
    # A rejoin renames; a name that could pass for an account (or is not plain ASCII) is never read.
    outsider.request_join(curve_key(70), "tcp://o:2", "0x" + "ab" * 4)
    assert c.admin.site_names() == {}
    c.admin.remove(outsider.sender)
    outsider.request_join(curve_key(70), "tcp://o:3", "st-mary")
    assert c.admin.site_names() == {outsider.sender: "st-mary"}


def test_admin_only_and_state_guards(consortium: Consortium) -> None:
    c = consortium
    site, outsider = c.sites[0], c.outsiders[0]
    outsider.request_join(curve_key(40), "tcp://o:1")
    with pytest.raises(errors.NotAdmin) as exc:
        site.admit(outsider.sender)
    assert exc.value.error_args == (site.sender,)
    with pytest.raises(errors.NotPending) as exc:
        c.admin.admit(site.sender)
    assert exc.value.error_args == (site.sender, MemberStatus.ACTIVE)
    with pytest.raises(errors.NotRemovable):
        c.admin.remove(c.admin.sender)  # never joined
    c.admin.remove(outsider.sender)  # a pending site can be turned away
    assert c.admin.member(outsider.sender).status is MemberStatus.REMOVED
    with pytest.raises(errors.NotMember):
        outsider.update_endpoint("tcp://o:2")
    # A removed site may ask again, keeping its key.
    outsider.request_join(curve_key(40), "tcp://o:3")
    assert c.admin.member(outsider.sender).status is MemberStatus.PENDING


def test_remove_active_member_stops_its_commits(consortium: Consortium) -> None:
    c = consortium
    victim = c.sites[2]
    c.admin.remove(victim.sender)
    assert c.admin.member(victim.sender).status is MemberStatus.REMOVED
    with pytest.raises(errors.NotActiveMember):
        commit(victim, 0, h32("u"), 1)
    # Two active members left: both committing ends the round's wait without the window.
    for i, s in enumerate(c.sites[:2]):
        commit(s, 0, h32(i), 1)
    assert c.admin.can_reveal(0)


def test_update_endpoint(consortium: Consortium) -> None:
    c = consortium
    c.sites[0].update_endpoint("tcp://10.1.1.1:9000")
    assert c.admin.member(c.sites[0].sender).endpoint == "tcp://10.1.1.1:9000"
    with pytest.raises(errors.InvalidEndpoint) as exc:
        c.sites[0].update_endpoint("")
    assert exc.value.error_args == (0,)
    updated = [e for e in c.admin.events().poll() if e.name == "EndpointUpdated"]
    assert [(e.args["account"], e.args["endpoint"]) for e in updated] == [
        (c.sites[0].sender, "tcp://10.1.1.1:9000")
    ]


def test_majority_mode_bootstrap_then_votes(devnet: Devnet, accounts: list[LocalAccount]) -> None:
    # minPeers 3: the admin admits directly until 3 members are active, then only votes count.
    c = deploy_consortium(devnet, accounts, sites=5, admitted=3, outsiders=1, min_peers=3, majority=True)
    a, b, s2, d, e = c.sites
    assert "BootstrapClosed" in [ev.name for ev in c.admin.events().poll()]
    with pytest.raises(errors.NotActiveMember):
        c.admin.admit(d.sender)  # bootstrap is over; the admin is not a member
    with pytest.raises(errors.NotActiveMember):
        e.admit(d.sender)  # pending sites do not vote

    tally = a.vote_tally(a.admit(d.sender))  # 1 of 3: needs 2
    assert tally == VoteTally(d.sender, a.sender, True, 1, 2) and not tally.passed
    assert c.admin.member(d.sender).status is MemberStatus.PENDING
    assert c.admin.member(d.sender).admit_votes == 1
    assert c.admin.has_voted(d.sender, a.sender, True)
    with pytest.raises(errors.AlreadyVoted) as exc:
        a.admit(d.sender)
    assert exc.value.error_args == (d.sender, a.sender)
    assert b.vote_tally(b.admit(d.sender)) == VoteTally(d.sender, b.sender, True, 2, 2)  # admitted
    assert c.admin.member(d.sender).status is MemberStatus.ACTIVE

    # Removal: the target does not vote; a majority of the other 3 active members is 2.
    a.remove(s2.sender)
    with pytest.raises(errors.SelfVote):
        s2.remove(s2.sender)
    assert c.admin.member(s2.sender).status is MemberStatus.ACTIVE
    d.remove(s2.sender)
    assert c.admin.member(s2.sender).status is MemberStatus.REMOVED
    assert c.admin.member(s2.sender).remove_votes == 0  # ballots reset with the status change
    votes = [ev for ev in c.admin.events().poll() if ev.name == "VoteCast"]
    assert [(v.args["votes"], v.args["needed"]) for v in votes[-2:]] == [(1, 2), (2, 2)]


def _flood_join_requests(c: Consortium, count: int) -> None:
    """`count` join requests from fresh accounts, sent as two JSON-RPC batches (impersonated senders)."""
    url, contract = c.devnet.rpc_url, c.admin.contract
    senders = [f"0x{0x5A000000 + i:040x}" for i in range(count)]

    def batch(calls: list[tuple[str, list[object]]]) -> list[object]:
        body = [{"jsonrpc": "2.0", "id": i, "method": m, "params": p} for i, (m, p) in enumerate(calls)]
        answers = requests.post(url, json=body, timeout=30).json()
        assert not [a["error"] for a in answers if "error" in a]
        return [a["result"] for a in answers]

    batch([("anvil_setBalance", [s, hex(10**18)]) for s in senders])
    batch([("anvil_impersonateAccount", [s]) for s in senders])
    try:
        txs = []
        for i, s in enumerate(senders):
            join_args = [h32(f"flood-{i}"), f"tcp://10.9.0.1:{1000 + i}", f"flood-{i}"]
            data = contract.encode_abi("requestJoin", args=join_args)
            txs.append(
                (
                    "eth_sendTransaction",
                    [{"from": s, "to": c.admin.address, "data": data, "gas": hex(300_000)}],
                )
            )
        hashes = batch(txs)

        # anvil answers a send before it mines it: wait for every receipt, and check none reverted.
        def receipts() -> list[object]:
            return batch([("eth_getTransactionReceipt", [h]) for h in hashes])

        # 256 blocks, one per request: 2.6 s alone, and past 30 s once in a suite run beside two swarms
        wait_until(lambda: all(receipts()), 180, what="the flood's join requests to be mined")
        assert {r["status"] for r in receipts()} == {"0x1"}  # type: ignore[index]
    finally:
        batch([("anvil_stopImpersonatingAccount", [s]) for s in senders])


def test_pending_join_requests_are_capped(consortium: Consortium) -> None:
    """Anyone can ask to join, so pending requests are bounded: past MAX_PENDING a join reverts by name
    until the admin decides (here: rejects one by removing it, admits another)."""
    c = consortium
    cap = int(c.admin.contract.functions.MAX_PENDING().call())
    assert c.admin.pending_member_count() == 0
    _flood_join_requests(c, cap)
    assert c.admin.pending_member_count() == cap
    outsider = c.outsiders[0]
    with pytest.raises(errors.TooManyPending) as exc:
        outsider.request_join(curve_key(60), "tcp://10.0.0.9:5555")
    assert exc.value.error_args == (cap,)
    assert c.admin.member(outsider.sender).status is MemberStatus.NONE
    flooders = [m.account for m in c.admin.members() if m.status is MemberStatus.PENDING]
    c.admin.remove(flooders[0])  # the admin rejects a request: a slot frees up
    assert c.admin.pending_member_count() == cap - 1
    outsider.request_join(curve_key(60), "tcp://10.0.0.9:5555")
    c.admin.admit(flooders[1])
    c.admin.admit(outsider.sender)
    assert c.admin.pending_member_count() == cap - 2
    # Every daemon reads the member list each poll: at the cap it still fits well inside a call's gas.
    members_gas = c.admin.contract.functions.getMembers().estimate_gas()
    assert members_gas < 30_000_000, members_gas
    print(f"getMembers() with {len(c.admin.members())} members: {members_gas:,} gas")
