"""The share holder's guard: never both secrets of one peer, never a committer's pair seed, nothing forged.

Every refusal is a named error whose reason the vault counts; the reveal record is on disk before an
answer leaves, so it holds across leader terms and across a restart of the site.
"""

from __future__ import annotations

from pathlib import Path

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from secagg_sim import ROUND, Swarm, make_swarm

from swarmd.errors import StoreError
from swarmd.privacy import (
    BadRequest,
    BadShare,
    BadVaultState,
    DoubleReveal,
    ReplayedRequest,
    RevealRequest,
    RoundSecrets,
    ShareVault,
    make_shares,
    threshold_for,
)
from swarmd.privacy.errors import BadResponse, SecAggError
from swarmd.privacy.wire import RevealResponse


@pytest.fixture
def swarm(tmp_path: Path) -> Swarm:
    return make_swarm(tmp_path, 5)


def request(
    swarm: Swarm,
    j: str,
    *,
    term: int = 1,
    dropped: tuple[str, ...] = (),
    leader: str | None = None,
    **asks: list[str],
) -> bytes:
    """A request to j as an honest leader would send it for `dropped`, with `asks` overriding b/c/pair."""
    survivors = tuple(s for s in swarm.sites if s not in dropped)
    others = [s for s in swarm.graph[j]]
    honest = {"b": sorted([j, *others]), "c": sorted(set(others) & set(dropped)), "pair": []}
    honest["b"] = [s for s in honest["b"] if s in survivors]
    honest |= asks
    return RevealRequest(
        ROUND,
        term,
        leader or swarm.sites[0],
        j,
        survivors,
        tuple(dropped),
        *(tuple(honest[k]) for k in ("b", "c", "pair")),
    ).to_bytes()


def answer(swarm: Swarm, j: str, req: bytes, vault: ShareVault | None = None) -> RevealResponse:
    raw = (vault or swarm.vaults[j]).answer(swarm.secrets[j], req, swarm.sites, swarm.advertised, swarm.graph)
    return RevealResponse.from_bytes(raw, BadResponse)


def test_an_honest_request_is_answered_with_exactly_what_it_asks(swarm: Swarm) -> None:
    j, i = swarm.sites[1], swarm.sites[2]
    resp = answer(swarm, j, request(swarm, j, dropped=(i,)))
    assert sorted(resp.b) == [s for s in swarm.sites if s != i] and list(resp.c) == [i] and resp.pair == {}


def test_both_shares_of_one_peer_in_one_request_are_refused(swarm: Swarm) -> None:
    j, i = swarm.sites[1], swarm.sites[2]
    with pytest.raises(DoubleReveal):
        swarm.vaults[j].answer(
            swarm.secrets[j], request(swarm, j, c=[i]), swarm.sites, swarm.advertised, swarm.graph
        )
    assert swarm.vaults[j].refusals["double_reveal"] == 1
    answer(swarm, j, request(swarm, j))  # refused whole: nothing was recorded, an honest request still works


@pytest.mark.parametrize("restart", [False, True])
def test_the_other_share_is_refused_under_a_later_term_and_after_a_restart(
    swarm: Swarm, restart: bool
) -> None:
    j, i = swarm.sites[1], swarm.sites[2]
    answer(swarm, j, request(swarm, j, term=1))  # term 1: i survived, j revealed its share of b_i
    vault = ShareVault(swarm.vault_dir(j)) if restart else swarm.vaults[j]
    with pytest.raises(DoubleReveal) as err:  # term 2: a new leader says i dropped and asks for c_sk_i
        answer(swarm, j, request(swarm, j, term=2, dropped=(i,)), vault)
    assert err.value.reason == "double_reveal" and vault.refusals["double_reveal"] == 1


@pytest.mark.parametrize("bound", [True, False])
def test_a_leader_that_died_mid_unmask_is_recovered_by_the_next_term(swarm: Swarm, bound: bool) -> None:
    """Term 1's leader got its own b share from j, then died: term 2's leader asks j for its c_sk share.
    Its own secrets told the dead leader nothing, so j gives it, when the daemon bound the leader; a
    request whose leader nobody vouched for gets no such exception."""
    j, first, second = swarm.sites[1], swarm.sites[2], swarm.sites[3]

    def ask(term: int, leader: str, dropped: tuple[str, ...] = ()) -> RevealResponse:
        req = request(swarm, j, term=term, leader=leader, dropped=dropped)
        raw = swarm.vaults[j].answer(
            swarm.secrets[j], req, swarm.sites, swarm.advertised, swarm.graph,
            leader=leader if bound else None, term=term if bound else None,
        )  # fmt: skip
        return RevealResponse.from_bytes(raw, BadResponse)

    assert first in ask(1, first).b
    if not bound:
        with pytest.raises(DoubleReveal):
            ask(2, second, dropped=(first,))
        return
    assert list(ask(2, second, dropped=(first,)).c) == [first]
    other = swarm.sites[4]  # a peer that is not the leader keeps its guard: b given in term 1, c refused
    with pytest.raises(DoubleReveal):
        ask(3, swarm.sites[0], dropped=tuple(sorted((first, other))))


def test_a_pair_seed_with_a_committer_is_refused(swarm: Swarm) -> None:
    j, i = swarm.sites[1], swarm.sites[2]
    with pytest.raises(BadRequest) as err:
        answer(swarm, j, request(swarm, j, pair=[i]))
    assert err.value.reason == "committed_pair" and swarm.vaults[j].refusals["committed_pair"] == 1


def test_a_pair_seed_with_an_absent_site_is_given(swarm: Swarm) -> None:
    j, x = swarm.sites[1], swarm.sites[4]
    committed = [s for s in swarm.sites if s != x]
    req = RevealRequest(ROUND, 1, j, j, tuple(committed), (), tuple(committed), (x,), (x,)).to_bytes()
    raw = swarm.vaults[j].answer(swarm.secrets[j], req, committed, swarm.advertised, swarm.graph)
    resp = RevealResponse.from_bytes(raw, BadResponse)
    assert list(resp.pair) == [x] and list(resp.c) == [x] and len(resp.pair[x]) == 32
    again = RevealRequest(ROUND, 2, j, j, tuple(committed), (), tuple(committed), (x,), (x,)).to_bytes()
    vault = ShareVault(swarm.vault_dir(j))  # a new leader, after a restart, asks the same again
    raw2 = vault.answer(swarm.secrets[j], again, committed, swarm.advertised, swarm.graph)
    resp2 = RevealResponse.from_bytes(raw2, BadResponse)
    assert (resp2.term, resp2.pair, resp2.c, resp2.b) == (2, resp.pair, resp.c, resp.b)


def test_replayed_and_conflicting_requests_are_refused(swarm: Swarm) -> None:
    j = swarm.sites[1]
    first, second = request(swarm, j, term=1), request(swarm, j, term=2)
    a1 = swarm.vaults[j].answer(swarm.secrets[j], first, swarm.sites, swarm.advertised, swarm.graph)
    assert swarm.vaults[j].answer(swarm.secrets[j], first, swarm.sites, swarm.advertised, swarm.graph) == a1
    answer(swarm, j, second)
    with pytest.raises(ReplayedRequest) as err:
        answer(swarm, j, first)
    assert err.value.reason == "replay"
    with pytest.raises(ReplayedRequest) as err:  # same term, other content
        answer(swarm, j, request(swarm, j, term=2, b=[j]))
    assert err.value.reason == "term_conflict"
    assert swarm.vaults[j].refusals == {"replay": 1, "term_conflict": 1}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"round": ROUND + 1}, "round"),
        ({"recipient": "0x" + "11" * 20}, "recipient"),
        ({"v": 2}, "version"),
        ({"extra": 1}, "malformed"),
        ({"term": -1}, "malformed"),
        ({"b": "not a list"}, "malformed"),
    ],
)
def test_malformed_or_misaddressed_requests_are_named(swarm: Swarm, change: dict, reason: str) -> None:
    j = swarm.sites[1]
    body = msgpack.unpackb(request(swarm, j)) | change
    with pytest.raises(BadRequest) as err:
        answer(swarm, j, msgpack.packb(body))
    assert err.value.reason == reason and swarm.vaults[j].refusals[reason] == 1


def test_requests_bound_to_the_daemons_leader_and_term(swarm: Swarm) -> None:
    j, vault = swarm.sites[1], swarm.vaults[swarm.sites[1]]
    for kw, reason in (({"leader": swarm.sites[2]}, "leader"), ({"term": 5}, "term")):
        with pytest.raises(BadRequest) as err:
            vault.answer(
                swarm.secrets[j], request(swarm, j), swarm.sites, swarm.advertised, swarm.graph, **kw
            )
        assert err.value.reason == reason


def test_requests_outside_the_protocol_are_refused(tmp_path: Path) -> None:
    swarm = make_swarm(tmp_path, 8, k=2)
    j = swarm.sites[0]
    n1, n2 = swarm.graph[j]
    stranger = next(s for s in swarm.sites if s not in (j, n1, n2))
    cases = [
        (request(swarm, j, b=sorted([j, n1, n2, stranger])), "scope"),
        (RevealRequest(ROUND, 1, j, j, (j,), (), (j,), (), ()).to_bytes(), "sets"),
        (request(swarm, j, dropped=(j,)), "not_survivor"),
        # j's two ring neighbours drop: j is cut off, and its unmasked sum alone would be its update
        (request(swarm, j, dropped=(n1, n2)), "disconnected"),
    ]
    for req, reason in cases:
        with pytest.raises(BadRequest) as err:
            answer(swarm, j, req)
        assert err.value.reason == reason


def _share_blob(swarm: Swarm, frm: str, holder: str, **change: object) -> bytes:
    blob = make_shares(swarm.secrets[frm], swarm.advertised, swarm.graph, swarm.params)[holder]
    return msgpack.packb(msgpack.unpackb(blob) | change) if change else blob


def test_bad_shares_are_named_and_counted(swarm: Swarm) -> None:
    i, j, k = swarm.sites[0], swarm.sites[1], swarm.sites[2]
    vault, mine = swarm.vaults[j], swarm.secrets[j]
    good = _share_blob(swarm, i, j)
    tampered = msgpack.unpackb(good)
    tampered["ct"] = bytes([tampered["ct"][0] ^ 1]) + tampered["ct"][1:]
    cases = [
        (b"\xc1garbage", i, "malformed"),
        (msgpack.packb([1, 2]), i, "malformed"),
        (_share_blob(swarm, i, j, nonce=b"short"), i, "malformed"),
        (_share_blob(swarm, i, j, round=ROUND - 1), i, "round"),
        (_share_blob(swarm, i, k), i, "recipient"),
        (good, k, "sender"),
        (_share_blob(swarm, i, j, view=bytes(32)), i, "view"),
        (msgpack.packb(tampered), i, "tampered"),
        (_share_blob(swarm, i, j, sender="0x" + "22" * 20), "0x" + "22" * 20, "unknown_site"),
    ]
    for blob, sender, reason in cases:
        with pytest.raises(BadShare) as err:
            vault.accept(mine, sender, blob, swarm.advertised, swarm.graph)
        assert err.value.reason == reason
    assert sum(vault.refusals.values()) == len(cases) and vault.refusals["malformed"] == 3
    vault.accept(mine, i, good, swarm.advertised, swarm.graph)  # the genuine one still goes in


def test_shares_from_a_non_neighbour_and_late_shares_are_refused(tmp_path: Path) -> None:
    swarm = make_swarm(tmp_path, 8, k=2)
    j = swarm.sites[0]
    far = next(s for s in swarm.sites if s != j and s not in swarm.graph[j])
    blob = make_shares(swarm.secrets[far], swarm.advertised, swarm.graph, swarm.params)[swarm.graph[far][0]]
    msg = msgpack.unpackb(blob) | {"recipient": j}
    with pytest.raises(BadShare) as err:
        swarm.vaults[j].accept(swarm.secrets[j], far, msgpack.packb(msg), swarm.advertised, swarm.graph)
    assert err.value.reason == "not_neighbour"
    answer(swarm, j, request(swarm, j))
    with pytest.raises(BadShare) as err:
        swarm.vaults[j].accept(swarm.secrets[j], swarm.graph[j][0], _share_blob(swarm, swarm.graph[j][0], j),
                               swarm.advertised, swarm.graph)  # fmt: skip
    assert err.value.reason == "late"


def test_the_record_is_on_disk_before_the_answer(swarm: Swarm, monkeypatch: pytest.MonkeyPatch) -> None:
    j, vault = swarm.sites[1], swarm.vaults[swarm.sites[1]]

    def full_disk(*_: object) -> None:
        raise SecAggError("disk", "no space")

    monkeypatch.setattr(vault, "_persist", full_disk)
    with pytest.raises(SecAggError):
        answer(swarm, j, request(swarm, j))
    monkeypatch.undo()
    # The failed attempt recorded in memory what it was about to reveal: the other share stays refused.
    with pytest.raises(DoubleReveal):
        answer(swarm, j, request(swarm, j, term=2, dropped=(swarm.sites[2],)))


def test_an_unreadable_vault_file_fails_closed(swarm: Swarm) -> None:
    j = swarm.sites[1]
    path = next(swarm.vault_dir(j).glob("round-*.msgpack"))
    path.write_bytes(b"\x93garbage")
    with pytest.raises(BadVaultState):
        answer(swarm, j, request(swarm, j), ShareVault(swarm.vault_dir(j)))


def test_secrets_of_another_round_are_refused_and_old_rounds_forgotten(swarm: Swarm) -> None:
    j = swarm.sites[1]
    other = RoundSecrets(ROUND + 1, j, swarm.secrets[j].mask_sk, swarm.secrets[j].enc_sk, swarm.secrets[j].b)
    with pytest.raises(BadShare) as err:
        swarm.vaults[j].accept(other, swarm.sites[0], _share_blob(swarm, swarm.sites[0], j), swarm.advertised,
                               swarm.graph)  # fmt: skip
    assert err.value.reason == "round"
    swarm.vaults[j].forget_before(ROUND + 1)
    assert not list(swarm.vault_dir(j).glob("round-*.msgpack"))


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_no_sequence_of_requests_yields_both_secrets_of_a_site(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    """A leader that tells each holder, term after term, any split of the committers into survivors and
    dropped (holders restarting before every answer) never gets t shares of both b_i and c_sk_i of any
    site i, counting the shares its own vault holds, wherever 2t > d + 2 (the default for d >= 3); also
    when the daemon binds the leader, whose own secrets then go unrecorded."""
    n, k = data.draw(st.sampled_from([(5, 0), (8, 0), (8, 3), (8, 4)]), label="sites, neighbours")
    swarm = make_swarm(tmp_path_factory.mktemp("vaults"), n, k=k)
    leader, t = swarm.sites[0], {s: threshold_for(swarm.params, len(swarm.graph[s])) for s in swarm.sites}
    bound = data.draw(st.booleans(), label="leader bound")
    got: dict[tuple[str, str], set[str]] = {}  # (kind, owner) -> holders whose share the leader has
    for s in swarm.graph[leader]:
        got.setdefault(("b", s), set()).add(leader)
        got.setdefault(("c", s), set()).add(leader)
    for term in range(1, 4):
        for j in swarm.sites[1:]:
            others = [s for s in swarm.sites[1:] if s != j]
            dropped = tuple(
                sorted(data.draw(st.lists(st.sampled_from(others), max_size=n // 3, unique=True)))
            )
            req = request(swarm, j, term=term, dropped=dropped)
            try:
                raw = ShareVault(swarm.vault_dir(j)).answer(  # a restart before every answer
                    swarm.secrets[j], req, swarm.sites, swarm.advertised, swarm.graph,
                    leader=leader if bound else None, term=term if bound else None,
                )  # fmt: skip
            except BadRequest:
                continue
            resp = RevealResponse.from_bytes(raw, BadResponse)
            for kind, shares in (("b", resp.b), ("c", resp.c)):
                for owner in shares:
                    got.setdefault((kind, owner), set()).add(j)
    for i in swarm.sites[1:]:
        assert 2 * t[i] > len(swarm.graph[i]) + 2
        assert not (len(got.get(("b", i), ())) >= t[i] and len(got.get(("c", i), ())) >= t[i]), i


def test_a_vault_where_no_directory_can_be_made_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError):
        ShareVault(tmp_path / "file" / "vault")
