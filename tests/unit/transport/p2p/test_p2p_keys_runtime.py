"""One identity (the account key is the libp2p key) and the trio thread's bridge to asyncio."""

from __future__ import annotations

import asyncio
import time

import pytest

pytest.importorskip("libp2p", reason="the p2p extra is not installed (pip install 'swarmd[p2p]')")

import trio
from eth_account import Account
from libp2p.crypto.ed25519 import create_new_key_pair as ed25519_pair
from libp2p.peer.id import ID

from swarmd.errors import IdentityError
from swarmd.transport.p2p import keys
from swarmd.transport.p2p.runtime import RuntimeClosed, TrioThread, to_asyncio


def test_the_peer_id_of_an_account_key_names_that_account() -> None:
    acct = Account.create()
    pid = keys.peer_id(bytes(acct.key))
    assert str(pid).startswith("16Uiu2")  # secp256k1, public key inlined
    assert keys.account_of(pid) == acct.address == keys.account_address(bytes(acct.key))
    assert keys.account_of(ID.from_base58(str(pid))) == acct.address  # from the text form alone


def test_a_peer_with_another_key_type_names_no_account() -> None:
    assert keys.account_of(ID.from_pubkey(ed25519_pair().public_key)) is None


def test_a_key_that_is_not_32_bytes_is_an_identity_error() -> None:
    with pytest.raises(IdentityError):
        keys.keypair(b"\x01" * 31)


async def test_calls_cross_to_trio_and_back_and_errors_keep_their_type() -> None:
    thread = TrioThread()
    thread.start()
    loop = asyncio.get_running_loop()

    async def on_asyncio(x: int) -> int:
        await asyncio.sleep(0)
        return x * 2

    async def on_trio(x: int) -> int:
        await trio.sleep(0)
        return await to_asyncio(loop, on_asyncio(x)) + 1

    async def fails() -> None:
        raise IdentityError("boom")

    try:
        assert await thread.call(on_trio, 20) == 41
        with pytest.raises(IdentityError, match="boom"):
            await thread.call(fails)
    finally:
        assert thread.close(2.0)
    with pytest.raises(RuntimeClosed):
        await thread.call(on_trio, 1)


async def test_cancelling_the_asyncio_caller_cancels_the_trio_task_and_close_is_prompt() -> None:
    thread = TrioThread()
    thread.start()
    ended = trio.Event()
    cancelled: list[bool] = []

    async def forever() -> None:
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            cancelled.append(True)
            raise
        finally:
            ended.set()

    task = asyncio.ensure_future(thread.call(forever))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(100):
        if cancelled:
            break
        await asyncio.sleep(0.01)
    assert cancelled == [True]
    thread.submit(forever)  # a task still running must not hold close up
    t0 = time.monotonic()
    assert thread.close(2.0)
    assert time.monotonic() - t0 < 2.0
