"""JSON-RPC machinery under the Ledger client: retries while the endpoint is unreachable, local signing
with nonces from the node (recovering after "nonce too low"), rebroadcast of a transaction the node
forgot, waiting for receipts, and naming every revert after its Solidity custom error. What a transaction
is built from (nonce, gas estimate, fees), and views read together, go in one JSON-RPC batch: one round
trip (one request at a time for a node or gateway that refuses batches).

`ContractRpc` is the base of `Ledger`: it holds no API of its own, only `_call` (a view), `_call_many`
(views in one batch), `_send` (a transaction) and `_rpc` (any request), which the client's methods and
the event readers use. Views go the lean way (views.py) and through web3's contract calls only when
their answer is an error, which web3 then names. Transactions go the same way: calldata from views.py,
their inputs asked for in one raw batch, the signed bytes sent raw; web3 builds one only when the node
answers with an error (a revert in the estimate, which it names) or cannot be reached (it retries).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import requests
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from hexbytes import HexBytes
from urllib3.exceptions import LocationValueError
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import (
    BadFunctionCallOutput,
    ContractCustomError,
    ContractLogicError,
    ContractPanicError,
    ProviderConnectionError,
    TransactionNotFound,
    Web3Exception,
    Web3RPCError,
)
from web3.middleware import ExtraDataToPOAMiddleware
from web3.providers import HTTPProvider, JSONBaseProvider
from web3.types import RPCEndpoint, TxParams, TxReceipt

from swarmd.config import check_rpc_url
from swarmd.errors import ChainUnavailable, ContractRevert, LedgerError
from swarmd.ledger.errors import NodeError, RevertDecoder, TransactionFailed, UnknownContract
from swarmd.ledger.views import NotTaken, Views

T = TypeVar("T")
_log = logging.getLogger(__name__)

# A proxy in front of the node answering 502/503 is as unreachable as a refused connection.
_UNREACHABLE = (
    requests.ConnectionError,
    requests.Timeout,
    requests.HTTPError,
    ProviderConnectionError,
    ConnectionError,
)


def _is_outage(exc: BaseException) -> bool:
    """The endpoint is down or overloaded (as opposed to answering, if only with an error)."""
    if isinstance(exc, requests.HTTPError):
        return exc.response is None or exc.response.status_code >= 500
    return isinstance(exc, _UNREACHABLE)


_NODE_HINTS = {
    "insufficient funds": "the site account has no ether for gas; fund it (on a devnet: `swarm devnet fund`)",
    "chain id": "the RPC endpoint serves another chain than the one this site was set up for",
    "gas limit": "the block gas limit is too low for this call; raise it in the chain's genesis",
}
_MAX_BACKOFF_S = 4.0
_NONCE_ATTEMPTS = 10
_REBROADCAST_S = 3.0


class _NonceTaken(Exception):
    """Internal: the nonce we signed with was used by another transaction; build and sign again."""


@dataclass(frozen=True)
class _TxInputs:
    """What the node says a transaction needs: the account's pending nonce, the gas estimate, the latest
    block (its base fee) and the suggested priority fee."""

    nonce: int
    gas: int
    block: Any
    tip: int

    def fees(self) -> dict[str, int]:
        base_fee = self.block.get("baseFeePerGas")
        if base_fee is None:
            raise LedgerError(
                "the chain's blocks carry no base fee (a chain before the London fork)",
                hint="swarmd sends EIP-1559 transactions; run the chain with London or a later fork",
            )
        # web3's own default: room for the base fee to double before the transaction is mined.
        return {"maxPriorityFeePerGas": int(self.tip), "maxFeePerGas": int(self.tip) + 2 * int(base_fee)}


def _result(answer: object) -> Any:
    """The result of a raw JSON-RPC answer; NotTaken for an error or anything else."""
    if not isinstance(answer, Mapping) or "error" in answer or "result" not in answer:
        raise NotTaken("answer")
    return answer["result"]


def _quantity(value: object) -> int:
    """A JSON-RPC quantity ("0x..."); NotTaken for anything else."""
    if not isinstance(value, str) or not value.startswith("0x"):
        raise NotTaken("quantity")
    return int(value, 16)


def _rpc_message(exc: Web3RPCError) -> str:
    error = (exc.rpc_response or {}).get("error")
    if isinstance(error, dict) and "message" in error:
        return str(error["message"])
    return str(exc.message)


def settled_session(rpc_url: str) -> requests.Session:
    """A requests session for `rpc_url` with what requests reads from the environment on every request
    (the proxy for this URL and NO_PROXY, REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE, ~/.netrc) read once,
    here: a site reads the chain after every block, and those lookups were a quarter of a read's CPU."""
    session = requests.Session()
    session.proxies.update(requests.utils.get_environ_proxies(rpc_url))
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        session.verify = bundle
    auth = requests.utils.get_netrc_auth(rpc_url)
    if auth:
        session.auth = auth
    session.trust_env = False
    return session


def make_web3(rpc_url: str, *, poa: bool = False, timeout: float = 10.0) -> Web3:
    check_rpc_url(rpc_url, "RPC URL")
    # web3's own retry loop is switched off: the client retries (and reports) unreachability itself.
    # eth_chainId is cached: web3's validation middleware asks for it before every call, estimate and
    # send (one extra round trip each), and a node's chain id does not change under a client.
    provider = HTTPProvider(
        rpc_url,
        request_kwargs={"timeout": timeout},
        session=settled_session(rpc_url),
        exception_retry_configuration=None,
        cache_allowed_requests=True,
        cacheable_requests={RPCEndpoint("eth_chainId")},
    )
    w3 = Web3(provider)
    if poa:
        w3.middleware_onion.inject(ExtraDataToPOAMiddleware, layer=0)
    return w3


class ContractRpc:
    """Calls and transactions against one contract; `Ledger.__init__` sets the attributes declared here."""

    rpc_url: str
    address: ChecksumAddress
    account: LocalAccount | None
    retries: int
    backoff: float
    receipt_timeout: float
    gas_margin: float
    w3: Web3
    contract: Contract
    decoder: RevertDecoder
    _lock: threading.RLock
    _batch_reads: bool = True  # cleared for a node that refuses JSON-RPC batches
    views: Views
    lean: bool = True  # views read, transactions built through `views` (False: web3's contracts only)
    _chain_id: int | None = None  # a node's chain id does not change under a client

    @property
    def _provider(self) -> JSONBaseProvider:
        return cast(JSONBaseProvider, self.w3.provider)

    def _rpc(self, fn: Callable[[], T]) -> T:
        """Run one RPC, retrying with exponential backoff while the endpoint is unreachable."""
        delay = self.backoff
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except (ContractLogicError, BadFunctionCallOutput, TransactionNotFound):
                raise  # each caller turns these into the right named error
            except Web3RPCError as exc:
                message = _rpc_message(exc)
                hint = next((h for k, h in _NODE_HINTS.items() if k in message.lower()), None)
                raise NodeError(f"{self.rpc_url} refused the request: {message}", hint=hint) from exc
            except Web3Exception as exc:
                raise LedgerError(
                    f"unexpected answer from {self.rpc_url}: {type(exc).__name__}: {exc}"
                ) from exc
            except json.JSONDecodeError as exc:
                raise LedgerError(
                    f"{self.rpc_url} does not speak JSON-RPC", hint="check chain.rpc_url in the site config"
                ) from exc
            except _UNREACHABLE as exc:
                if attempt == self.retries:
                    raise ChainUnavailable(
                        f"JSON-RPC endpoint {self.rpc_url} unreachable after {attempt + 1} attempts: "
                        f"{type(exc).__name__}",
                        hint="check that the chain node is running and chain.rpc_url in the site config",
                    ) from exc
                time.sleep(delay)
                delay = min(delay * 2, _MAX_BACKOFF_S)
            except (requests.RequestException, LocationValueError) as exc:
                # The URL itself is unusable (InvalidURL, InvalidSchema, urllib3's LocationParseError for a
                # host like "a..b", ...): retrying cannot help.
                raise ChainUnavailable(
                    f"JSON-RPC endpoint {self.rpc_url} cannot be used: {type(exc).__name__}: {exc}",
                    hint="check chain.rpc_url in the site config (or --rpc), e.g. http://127.0.0.1:8545",
                ) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _revert(self, exc: ContractLogicError) -> ContractRevert:
        if isinstance(exc, ContractCustomError):
            return self.decoder.decode(exc.data if isinstance(exc.data, str | bytes) else None)
        if isinstance(exc, ContractPanicError):
            return TransactionFailed("Panic", (str(exc),), hint="a contract invariant broke; report this bug")
        return TransactionFailed("Revert", (str(exc),))

    def _call(self, name: str, *args: Any, block: str | int = "latest") -> Any:
        if self.lean and name in self.views:
            request = self.views.request(self.address, name, args, block)
            try:
                return self.views.answer(name, self._rpc(lambda: self._provider.make_request(*request)))
            except NotTaken:
                pass  # an error, or no such contract: web3's call below names it
        fn = getattr(self.contract.functions, name)(*args)
        try:
            return self._rpc(lambda: fn.call(block_identifier=block))
        except ContractLogicError as exc:
            raise self._revert(exc) from None
        except BadFunctionCallOutput as exc:
            raise UnknownContract(
                f"{self.address} on {self.rpc_url} does not answer {name}() like a SwarmLedger",
                hint="check chain.contract in the site config and that the RPC points at the right chain",
            ) from exc

    def _send(self, name: str, *args: Any) -> TxReceipt:
        data = self.views.calldata(name, args) if self.lean else None
        return self._transact(lambda: getattr(self.contract.functions, name)(*args), name, data)

    def _transact(self, fn: Callable[[], Any], label: str, data: str | None = None) -> TxReceipt:
        """Send the transaction web3's `fn()` builds (or, lean, the call to our contract with calldata
        `data`, which must be what `fn()` encodes) and wait for it to be mined."""
        if self.account is None:
            raise LedgerError(f"cannot send {label}: this ledger client has no account (read-only)")
        with self._lock:
            for attempt in range(_NONCE_ATTEMPTS):
                signed, tx = self._build_and_sign(fn, data)
                try:
                    tx_hash = self._broadcast(signed)
                    receipt = self._await_receipt(signed, tx_hash)
                except _NonceTaken:
                    # Another sender with this key won the nonce; a random pause breaks the lockstep.
                    time.sleep(random.uniform(0, 0.02 * (attempt + 1)))
                    continue
                if receipt["status"] != 1:
                    raise self._explain_failure(tx, receipt)
                return receipt
        raise LedgerError(
            f"{label}: the account's nonce kept being taken by other transactions",
            hint="another process may be using the same account; give each site its own key",
        )

    def _build_and_sign(self, fn: Callable[[], Any], data: str | None) -> tuple[Any, dict[str, Any]]:
        if self.account is None:  # _transact checked; this keeps the type narrow
            raise LedgerError("this ledger client has no account (read-only)")
        sender = self.account.address
        inputs = self._lean_tx_inputs(data, sender) if data is not None else None
        function = None
        if inputs is None:
            function = fn()
            try:
                inputs = self._tx_inputs(function, sender)
            except ContractLogicError as exc:
                raise self._revert(exc) from None
        # Estimates can fall short (refunds; transactions mined first change its path): add a margin.
        gas = int(inputs.gas * self.gas_margin) + 10_000
        fields = {"from": sender, "nonce": inputs.nonce, "gas": gas, **inputs.fees()}
        if function is None:  # what web3's build_transaction makes of these fields (tests compare them)
            tx: dict[str, Any] = {
                "value": 0,
                "chainId": self._chain(),
                **fields,
                "to": self.address,
                "data": data,
            }
        else:
            # Every field is given, so web3 fills nothing from the node (the chain id is cached).
            tx = dict(self._rpc(lambda: function.build_transaction(fields)))
        return self.account.sign_transaction(tx), tx

    def _custom_revert(self, answer: Mapping[str, Any]) -> ContractRevert | None:
        """The contract's custom error an error answer carries (anvil, geth and Besu put the revert data
        in `error.data`); None for any other answer or error (a Panic, a node's own refusal)."""
        error = answer.get("error")
        data = error.get("data") if isinstance(error, Mapping) else None
        return self.decoder.known(data) if isinstance(data, str) else None

    def _chain(self) -> int:
        if self._chain_id is None:
            self._chain_id = int(self._rpc(lambda: self.w3.eth.chain_id))
        return self._chain_id

    def _lean_tx_inputs(self, data: str, sender: ChecksumAddress) -> _TxInputs | None:
        """`_tx_inputs` for calldata `data` to our contract, asked for in one raw batch. The contract's
        own error in the estimate is raised, named; None when any other answer is not the plain one (a
        Panic, a node without a method, an outage: web3's path names, works around or retries it)."""
        if not self._batch_reads:
            return None
        requests_: list[tuple[RPCEndpoint, list[Any]]] = [
            (RPCEndpoint("eth_getTransactionCount"), [sender, "pending"]),
            (RPCEndpoint("eth_estimateGas"), [{"from": sender, "to": self.address, "data": data}, "pending"]),
            (RPCEndpoint("eth_getBlockByNumber"), ["latest", False]),
            (RPCEndpoint("eth_maxPriorityFeePerGas"), []),
        ]
        try:
            answers = self._batch_answers(requests_)
            revert = self._custom_revert(answers[1])
            if revert is not None:
                raise revert  # the contract's own error: named here, no second round trip through web3
            nonce, gas, block, tip = (_result(a) for a in answers)
            if not isinstance(block, Mapping):
                raise NotTaken("eth_getBlockByNumber")
            base_fee = block.get("baseFeePerGas")
            return _TxInputs(
                _quantity(nonce),
                _quantity(gas),
                {"baseFeePerGas": None if base_fee is None else _quantity(base_fee)},
                _quantity(tip),
            )
        except (NotTaken, requests.RequestException, OSError, ValueError):
            return None

    def _tx_inputs(self, fn: Any, sender: ChecksumAddress) -> _TxInputs:
        """The node's answers a transaction is built from, in one round trip: over a hospital's WAN each
        request is one, and a round sends three or four transactions in sequence on its critical path."""
        eth = self.w3.eth
        answers = self._batch(
            [
                # The node's pending count is the authority: a locally cached nonce goes stale when the
                # chain rewinds (node restored from an older state) and a gapped transaction would never
                # be mined. Sends are serialised by the lock, and a race with another holder of the key
                # is "nonce too low".
                lambda: eth.get_transaction_count(sender, "pending"),
                # Estimated against "pending" (the next block), where the transaction will land: elect()
                # and reelect() depend on block.number, and a view of "latest" is one block behind them.
                lambda: fn.estimate_gas({"from": sender}, block_identifier="pending"),
                lambda: eth.get_block("latest"),
                lambda: eth.max_priority_fee,
            ]
        )
        return _TxInputs(*answers)

    def _call_many(self, calls: Sequence[tuple[str, tuple[Any, ...], str | int]]) -> list[Any]:
        """Several views, each (name, args, block), answered in one round trip; raises as `_call`."""
        if self.lean and self._batch_reads and all(name in self.views for name, _, _ in calls):
            try:
                return self._lean_batch(calls)
            except (NotTaken, requests.RequestException, OSError, ValueError):
                pass  # web3's batch below retries an outage, names an error, learns of a refused batch
        fns = [(getattr(self.contract.functions, name)(*args), block) for name, args, block in calls]
        try:
            return self._batch([functools.partial(fn.call, block_identifier=block) for fn, block in fns])
        except ContractLogicError as exc:
            raise self._revert(exc) from None
        except BadFunctionCallOutput as exc:
            names = ", ".join(f"{name}()" for name, _, _ in calls)
            raise UnknownContract(
                f"{self.address} on {self.rpc_url} does not answer {names} like a SwarmLedger",
                hint="check chain.contract in the site config and that the RPC points at the right chain",
            ) from exc

    def _lean_batch(self, calls: Sequence[tuple[str, tuple[Any, ...], str | int]]) -> list[Any]:
        """`_call_many`'s happy path: one batch of `eth_call`s to the provider, each answer decoded by
        `views`; NotTaken for any answer but the one expected."""
        requests_ = [self.views.request(self.address, name, args, block) for name, args, block in calls]
        answers = self._batch_answers(requests_)
        return [self.views.answer(name, a) for (name, _, _), a in zip(calls, answers, strict=True)]

    def _batch_answers(self, requests_: Sequence[tuple[RPCEndpoint, list[Any]]]) -> list[dict[str, Any]]:
        """The provider's raw answers to a batch, in the order asked (JSON-RPC allows any: by id);
        NotTaken when it is not one answer per request."""
        answers = self._provider.make_batch_request(list(requests_))
        if not isinstance(answers, list) or len(answers) != len(requests_):
            raise NotTaken("batch")
        if not all(isinstance(a, dict) and isinstance(a.get("id"), int) for a in answers):
            raise NotTaken("batch")
        return sorted(answers, key=lambda a: int(a["id"]))  # type: ignore[arg-type]

    def _batch(self, calls: Sequence[Callable[[], Any]]) -> list[Any]:
        """The answers to `calls` (web3 requests, made when called) in one JSON-RPC batch, or one request
        at a time, with `_rpc`'s retries, for a node or gateway that refuses batches (it is asked so from
        then on) and whenever the batch fails."""
        refusal: Exception | None = None
        if self._batch_reads:
            try:
                with self.w3.batch_requests() as batch:
                    for call in calls:
                        batch.add(call())
                    return list(batch.execute())
            except (ContractLogicError, BadFunctionCallOutput):
                raise  # the node answered: a revert, or no such contract
            except (requests.RequestException, Web3Exception, ValueError, OSError) as exc:
                # Down or slow (the requests one by one retry it), an error about one request (they name
                # it), or a refusal of batches (an error object, HTTP 4xx, an answer that is not a list):
                # only the last stops batching, so tell it by the single requests' success.
                refusal = None if _is_outage(exc) else exc
        answers = [self._rpc(call) for call in calls]
        if refusal is not None:
            self._batch_reads = False
            _log.info("%s refused a JSON-RPC batch (%s); asking one request at a time", self.rpc_url, refusal)
        return answers

    def _broadcast(self, signed: Any) -> bytes:
        if self.lean:
            with contextlib.suppress(NotTaken, requests.RequestException, OSError, ValueError):
                raw = "0x" + bytes(signed.raw_transaction).hex()
                answer = self._provider.make_request(RPCEndpoint("eth_sendRawTransaction"), [raw])
                if _result(answer) == "0x" + bytes(signed.hash).hex():
                    return bytes(signed.hash)
            # An error, or no answer: web3 sends the same bytes again (a node that has them says so),
            # and names the error as before.
        try:
            return bytes(self._rpc(lambda: self.w3.eth.send_raw_transaction(signed.raw_transaction)))
        except NodeError as exc:
            message = str(exc).lower()
            if any(m in message for m in ("already known", "already imported", "known transaction")):
                return bytes(signed.hash)  # an earlier attempt reached the node before the connection dropped
            if any(m in message for m in ("nonce too low", "nonce is too low", "underpriced")):
                # Our nonce is used (mined, or pending from another holder of the key): ours, or redo.
                if self._receipt_or_none(bytes(signed.hash)) is not None:
                    return bytes(signed.hash)
                raise _NonceTaken from exc
            raise

    def _receipt_or_none(self, tx_hash: bytes) -> TxReceipt | None:
        try:
            return self._rpc(lambda: self.w3.eth.get_transaction_receipt(HexBytes(tx_hash)))
        except TransactionNotFound:
            return None

    def _await_receipt(self, signed: Any, tx_hash: bytes) -> TxReceipt:
        deadline = time.monotonic() + self.receipt_timeout
        last_broadcast = time.monotonic()
        pause = 0.005
        while time.monotonic() < deadline:
            receipt = self._receipt_or_none(tx_hash)
            if receipt is not None:
                return receipt
            if time.monotonic() - last_broadcast > _REBROADCAST_S:
                # A restarted node forgets its mempool: send the same signed bytes again (idempotent).
                self._broadcast(signed)
                last_broadcast = time.monotonic()
            time.sleep(pause)
            pause = min(pause * 2, 0.25)
        raise LedgerError(
            f"no receipt for transaction 0x{tx_hash.hex()} within {self.receipt_timeout:.0f} s",
            hint="the chain may be stalled (no blocks); check the validators",
        )

    def _explain_failure(self, tx: dict[str, Any], receipt: TxReceipt) -> ContractRevert:
        """Name a mined revert by replaying the call against the state of the block it was mined in."""
        call = cast(TxParams, {k: tx[k] for k in ("from", "to", "data", "value", "gas") if k in tx})
        try:
            self._rpc(lambda: self.w3.eth.call(call, block_identifier=receipt["blockNumber"]))
        except ContractLogicError as exc:
            return self._revert(exc)
        return TransactionFailed(
            "Reverted",
            ("0x" + bytes(receipt["transactionHash"]).hex(),),
            hint="the transaction reverted when mined (out of gas or a race with another transaction)",
        )
