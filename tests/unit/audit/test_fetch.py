"""What an auditor's fetch does with each way a holder can fail (the transport faked at its boundary;
tests/integration/test_transport.py makes a real server stop a stalled stream): a stream that broke
off is asked again and the holder is not written off, a holder that never answers is written off for
the rest of the audit, and a holder that does not hold the model is passed over for the next."""

from __future__ import annotations

import pytest
import torch
import zmq

from swarmd.audit import UpdateSource, UpdateUnavailable
from swarmd.audit import fetch as fetch_mod
from swarmd.codec import content_hash
from swarmd.errors import PeerRejected, StreamFailed, TransportError
from swarmd.ledger import Member, MemberStatus

ME, B, C = "0x" + "a" * 40, "0x" + "b" * 40, "0x" + "c" * 40
MODEL = {"w": torch.arange(12, dtype=torch.float32)}
H = content_hash(MODEL)
KB, KC = bytes([2]) * 32, bytes([3]) * 32  # B's and C's curve keys


def _member(account: str, n: int) -> Member:
    return Member(account, bytes([n]) * 32, f"tcp://127.0.0.1:{40000 + n}", MemberStatus.ACTIVE)


def _source(tmp_path, answers: dict[bytes, list[Exception | None]], asked: list[bytes]) -> UpdateSource:
    """An UpdateSource whose fetches from each holder (by curve key) answer in turn from `answers`:
    an exception is raised, None serves MODEL."""
    public, secret = zmq.curve_keypair()
    source = UpdateSource(
        store_dir=tmp_path,
        me=ME,
        curve_public=public,
        curve_secret=secret,
        members=[_member(B, 2), _member(C, 3)],
        max_bytes=1 << 20,
    )

    async def fetch_model(key: bytes, h: bytes, **_: object) -> dict[str, torch.Tensor]:
        asked.append(key)
        answer = answers[key].pop(0)
        if answer is not None:
            raise answer
        return MODEL

    source.node.fetch_model = fetch_model  # type: ignore[method-assign]
    return source


@pytest.fixture(autouse=True)
def _no_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch_mod, "RETRY_PAUSE", 0.0)


async def test_a_stream_that_broke_off_is_asked_again_of_the_same_holder(tmp_path) -> None:
    asked: list[bytes] = []
    source = _source(tmp_path, {KB: [StreamFailed("stalled"), StreamFailed("stalled"), None]}, asked)
    state, where = await source.get(H, [B, C], "the update of B")
    assert where == B and torch.equal(state["w"], MODEL["w"]) and asked == [KB] * 3
    assert source.unreachable == {}


async def test_a_holder_that_keeps_breaking_off_is_passed_over_but_not_written_off(tmp_path) -> None:
    asked: list[bytes] = []
    answers: dict[bytes, list[Exception | None]] = {
        KB: [StreamFailed("stalled")] * fetch_mod.FETCH_ATTEMPTS + [None],
        KC: [None],
    }
    source = _source(tmp_path, answers, asked)
    _, where = await source.get(H, [B, C], "the update of B")
    assert where == C and asked == [KB] * fetch_mod.FETCH_ATTEMPTS + [KC]
    # the next model B holds is asked of B again (a later round of the same audit)
    _, where = await source.get(H, [B], "the update of B")
    assert where == B and source.unreachable == {}


async def test_a_holder_that_never_answers_is_written_off_for_the_audit(tmp_path) -> None:
    asked: list[bytes] = []
    answers: dict[bytes, list[Exception | None]] = {KB: [TransportError("no answer from peer")], KC: [None]}
    source = _source(tmp_path, answers, asked)
    _, where = await source.get(H, [B, C], "the update of B")
    assert where == C and asked == [KB, KC]
    with pytest.raises(UpdateUnavailable, match="no answer from peer"):
        await source.get(H, [B], "the update of B")
    assert asked == [KB, KC]  # not asked again: a dead holder costs its timeout once


async def test_what_each_holder_answered_is_named_when_none_serves(tmp_path) -> None:
    asked: list[bytes] = []
    answers: dict[bytes, list[Exception | None]] = {
        KB: [PeerRejected("peer did not serve the model: not_found")],
        KC: [StreamFailed("stalled")] * fetch_mod.FETCH_ATTEMPTS,
    }
    source = _source(tmp_path, answers, asked)
    with pytest.raises(UpdateUnavailable) as exc:
        await source.get(H, [B, C], "the update of C")
    assert "not_found" in str(exc.value) and f"stalled ({fetch_mod.FETCH_ATTEMPTS} tries)" in str(exc.value)
    assert asked == [KB] + [KC] * fetch_mod.FETCH_ATTEMPTS
