"""New chain heads pushed by the node (`eth_subscribe("newHeads")` over a websocket).

Every state change the round protocol waits for (a commit, a reveal, the election, the finalize) is a
new block, so a site told of each block as it is mined reads the chain then, instead of at its next
poll (0.25-0.5 s later, several times per round). The push only asks for a read sooner: the daemon
keeps polling, and a head is never trusted for anything but its number. A socket that fails, closes
or goes quiet costs latency, never a round; the watch reconnects with backoff and logs each outage
once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

from web3 import AsyncWeb3, WebSocketProvider
from web3.exceptions import Web3Exception
from websockets.exceptions import WebSocketException

log = logging.getLogger("swarmd.heads")

# What a websocket to the node can fail with: refused or dropped connections, protocol errors, a
# request the node answers with an error, an answer that is not JSON-RPC.
HEAD_ERRORS = (
    OSError,
    Web3Exception,
    WebSocketException,
    asyncio.TimeoutError,
    ValueError,
    KeyError,
    TypeError,
)
RETRY_FIRST = 0.5  # seconds before the first reconnect; doubles up to RETRY_MAX
RETRY_MAX = 30.0
REQUEST_TIMEOUT = 10.0


class HeadWatch:
    """Calls `on_head(number)` for every new head the node at `url` pushes, until cancelled, and
    `on_link(live)` when the subscription comes up or goes down."""

    def __init__(
        self, url: str, on_head: Callable[[int], None], on_link: Callable[[bool], None] = lambda live: None
    ) -> None:
        self.url = url
        self.on_head = on_head
        self.on_link = on_link
        self.connected = False  # a subscription is live
        self.heads = 0  # heads seen since start

    async def run(self) -> None:
        delay = RETRY_FIRST
        while True:
            try:
                await self._follow()
                reason = "the node closed the subscription"
            except HEAD_ERRORS as exc:
                reason = f"{type(exc).__name__}: {exc}"
            if self.connected:  # it worked until now: a new outage, logged once
                self.connected, delay = False, RETRY_FIRST
                self.on_link(False)
                log.warning("chain heads from %s lost (%s); polling only, reconnecting", self.url, reason)
            elif delay == RETRY_FIRST:  # the first try failed
                log.warning("chain heads from %s: %s; polling only, retrying", self.url, reason)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)

    async def _follow(self) -> None:
        provider = WebSocketProvider(self.url, request_timeout=REQUEST_TIMEOUT, max_connection_retries=1)
        async with AsyncWeb3(provider) as w3:
            await w3.eth.subscribe("newHeads")
            self.connected = True
            self.on_link(True)
            log.info("chain heads pushed from %s", self.url)
            async for message in w3.socket.process_subscriptions():
                number = head_number(message)
                if number is not None:
                    self.heads += 1
                    self.on_head(number)


def head_number(message: object) -> int | None:
    """The block number of a newHeads notification, or None for anything else."""
    if not isinstance(message, Mapping):
        return None
    result = message.get("result")
    number = result.get("number") if isinstance(result, Mapping) else None  # web3's AttributeDict
    if isinstance(number, str):  # an unformatted hex quantity
        try:
            number = int(number, 16)
        except ValueError:
            return None
    return number if isinstance(number, int) and not isinstance(number, bool) and number >= 0 else None
