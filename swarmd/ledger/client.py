"""The Ledger client: synchronous calls and transactions against one SwarmLedger over JSON-RPC (web3 8).

Every transaction is signed locally with the site's account, gets its nonce from here (recovering after
"nonce too low"), is rebroadcast if the node forgets it, and is waited on until its receipt. Calls and
transactions retry with exponential backoff while the endpoint is unreachable and raise ChainUnavailable
after `retries`. A revert raises the ContractRevert subclass named after the Solidity custom error.
The daemon calls this from a worker thread; one lock serialises this client's transactions.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

import requests
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from hexbytes import HexBytes
from urllib3.exceptions import LocationValueError
from web3 import Web3
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
from web3.providers import HTTPProvider
from web3.types import TxParams, TxReceipt

from swarmd.config import check_rpc_url
from swarmd.errors import ChainUnavailable, ContractRevert, LedgerError
from swarmd.ledger import args as arg
from swarmd.ledger.artifact import load_artifact
from swarmd.ledger.errors import (
    NodeError,
    RevertDecoder,
    TransactionFailed,
    UnknownContract,
)
from swarmd.ledger.types import AdvertisedKeys, Binding, DeployParams, Member, MemberStatus, RoundInfo

if TYPE_CHECKING:
    from swarmd.ledger.events import EventStream

T = TypeVar("T")

# A proxy in front of the node answering 502/503 is as unreachable as a refused connection.
_UNREACHABLE = (
    requests.ConnectionError,
    requests.Timeout,
    requests.HTTPError,
    ProviderConnectionError,
    ConnectionError,
)
_NODE_HINTS = {
    "insufficient funds": "the site account has no ether for gas; fund it (on a devnet: Devnet.fund)",
    "chain id": "the RPC endpoint serves another chain than the one this site was set up for",
    "gas limit": "the block gas limit is too low for this call; raise it in the chain's genesis",
}
_MAX_BACKOFF_S = 4.0
_NONCE_ATTEMPTS = 10
_REBROADCAST_S = 3.0


class _NonceTaken(Exception):
    """Internal: the nonce we signed with was used by another transaction; build and sign again."""


def _rpc_message(exc: Web3RPCError) -> str:
    error = (exc.rpc_response or {}).get("error")
    if isinstance(error, dict) and "message" in error:
        return str(error["message"])
    return str(exc.message)


def make_web3(rpc_url: str, *, poa: bool = False, timeout: float = 10.0) -> Web3:
    check_rpc_url(rpc_url, "RPC URL")
    # web3's own retry loop is switched off: the client retries (and reports) unreachability itself.
    provider = HTTPProvider(rpc_url, request_kwargs={"timeout": timeout}, exception_retry_configuration=None)
    w3 = Web3(provider)
    if poa:
        w3.middleware_onion.inject(ExtraDataToPOAMiddleware, layer=0)
    return w3


class Ledger:
    """One SwarmLedger at `address`, seen through `rpc_url`, acting as `account` (None: read-only)."""

    def __init__(
        self,
        rpc_url: str,
        address: str,
        account: LocalAccount | None = None,
        *,
        poa: bool = False,
        retries: int = 5,
        backoff: float = 0.25,
        receipt_timeout: float = 120.0,
        request_timeout: float = 10.0,
        gas_margin: float = 1.25,
    ) -> None:
        artifact = load_artifact()
        self.rpc_url = rpc_url
        self.address = arg.address(address, "contract address")
        self.account = account
        self.retries = retries
        self.backoff = backoff
        self.receipt_timeout = receipt_timeout
        self.gas_margin = gas_margin
        self.w3 = make_web3(rpc_url, poa=poa, timeout=request_timeout)
        self.contract = self.w3.eth.contract(address=self.address, abi=artifact.abi)
        self.decoder = RevertDecoder(artifact.abi)
        self._poa = poa
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"Ledger({self.rpc_url!r}, {self.address!r}, sender={self.sender!r})"

    @property
    def sender(self) -> ChecksumAddress | None:
        return self.account.address if self.account is not None else None

    # ------------------------------------------------------------------ deploy
    @classmethod
    def deploy(
        cls, rpc_url: str, account: LocalAccount, params: DeployParams, *, poa: bool = False, **kwargs: Any
    ) -> Ledger:
        """Deploy a SwarmLedger bound to `params`; returns a client for it acting as `account`."""
        artifact = load_artifact()
        args = (
            arg.bytes32(params.task_hash, "task hash"),
            arg.bytes32(params.initial_model_hash, "initial model hash"),
            arg.uint(params.min_peers, "min_peers", arg.UINT32_MAX),
            arg.uint(params.commit_window, "commit_window", arg.UINT32_MAX),
            arg.uint(params.leader_timeout, "leader_timeout", arg.UINT32_MAX),
            bool(params.majority_admission),
            bool(params.secure_aggregation),
        )
        # A throwaway client (zero address) gives deploy the same signing, retry and revert machinery.
        bootstrap = cls(rpc_url, "0x" + "00" * 20, account, poa=poa, **kwargs)
        factory = bootstrap.w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
        receipt = bootstrap._transact(factory.constructor(*args), "deploy")
        address = receipt["contractAddress"]
        if not address:
            raise LedgerError("deploy transaction mined without a contract address")
        return cls(rpc_url, address, account, poa=poa, **kwargs)

    # ------------------------------------------------------------------ views
    def check(self) -> None:
        """Raise UnknownContract unless code is deployed at the address (ChainUnavailable when offline)."""
        code = self._rpc(lambda: self.w3.eth.get_code(self.address))
        if not code:
            raise UnknownContract(
                f"no contract at {self.address} on {self.rpc_url}",
                hint="check chain.contract in the site config and that the RPC points at the right chain",
            )

    def chain_id(self) -> int:
        return int(self._rpc(lambda: self.w3.eth.chain_id))

    def block_number(self) -> int:
        return int(self._rpc(lambda: self.w3.eth.block_number))

    def binding(self) -> DeployParams:
        return self.binding_info().params

    def binding_info(self) -> Binding:
        task, model, min_peers, window, timeout, majority, admin, deploy_block, secagg = self._call("binding")
        params = DeployParams(
            bytes(task), bytes(model), int(min_peers), int(window), int(timeout), bool(majority), bool(secagg)
        )
        return Binding(params=params, admin=str(admin), deploy_block=int(deploy_block))

    def admin(self) -> str:
        return str(self._call("admin"))

    def pending_admin(self) -> str | None:
        """The account a pending admin transfer was offered to, or None."""
        pending = str(self._call("pendingAdmin"))
        return None if int(pending, 16) == 0 else pending

    def pending_member_count(self) -> int:
        """How many join requests wait for a decision (the contract holds at most MAX_PENDING)."""
        return int(self._call("pendingMemberCount"))

    def members(self) -> list[Member]:
        return [Member.from_chain(v) for v in self._call("getMembers")]

    def member(self, account: str) -> Member:
        return Member.from_chain(self._call("getMember", arg.address(account)))

    def active_members(self) -> list[Member]:
        return [m for m in self.members() if m.status is MemberStatus.ACTIVE]

    def has_voted(self, candidate: str, voter: str, admit: bool = True) -> bool:
        return bool(self._call("hasVoted", arg.address(candidate), arg.address(voter, "voter"), admit))

    def current_round(self) -> int:
        return int(self._call("currentRound"))

    def round(self, r: int) -> RoundInfo:
        return RoundInfo.from_chain(self._call("getRound", arg.uint(r, "round")))

    def rounds(self) -> list[RoundInfo]:
        """Every round so far, oldest first, the current (open or elected) one last."""
        return [self.round(r) for r in range(self.current_round() + 1)]

    def base_hash(self, r: int) -> bytes:
        return bytes(self._call("baseHash", arg.uint(r, "round")))

    def has_committed(self, r: int, site: str) -> bool:
        return bool(self._call("hasCommitted", arg.uint(r, "round"), arg.address(site, "site")))

    def can_elect(self, r: int) -> bool:
        """True when elect(r) would succeed in the next block (a free view: call it before spending gas)."""
        # "pending": evaluated as the next block, where a transaction sent now lands (on nodes without a
        # pending block, e.g. Besu, this is the latest block and the answer is one block conservative).
        return bool(self._call("canElect", arg.uint(r, "round"), block="pending"))

    def can_reelect(self, r: int) -> bool:
        """True when reelect(r) would succeed in the next block."""
        return bool(self._call("canReelect", arg.uint(r, "round"), block="pending"))

    def events(self, from_block: int = 0, *, confirmations: int = 0) -> EventStream:
        from swarmd.ledger.events import EventStream

        return EventStream(self, from_block, confirmations=confirmations)

    # ------------------------------------------------------------------ transactions
    def request_join(self, curve_key: bytes, endpoint: str) -> TxReceipt:
        return self._send("requestJoin", arg.curve_key_raw(curve_key), endpoint)

    def admit(self, account: str) -> TxReceipt:
        return self._send("admit", arg.address(account))

    def remove(self, account: str) -> TxReceipt:
        return self._send("remove", arg.address(account))

    def update_endpoint(self, endpoint: str) -> TxReceipt:
        return self._send("updateEndpoint", endpoint)

    def transfer_admin(self, new_admin: str) -> TxReceipt:
        """Offer the admin role to `new_admin` (this account stays admin until it accepts)."""
        return self._send("transferAdmin", arg.address(new_admin, "new admin"))

    def accept_admin(self) -> TxReceipt:
        """Take the admin role offered to this account."""
        return self._send("acceptAdmin")

    def cancel_admin_transfer(self) -> TxReceipt:
        """Withdraw the pending admin transfer (admin only)."""
        return self._send("cancelAdminTransfer")

    def advertise_keys(self, r: int, mask_pk: bytes, enc_pk: bytes) -> TxReceipt:
        """Publish this site's per-round secure-aggregation public keys (raw 32-byte X25519 keys)."""
        mask = arg.bytes32(mask_pk, "mask public key")
        enc = arg.bytes32(enc_pk, "encryption public key")
        return self._send("advertise", arg.uint(r, "round"), mask, enc)

    def advertised_keys(self, r: int) -> list[AdvertisedKeys]:
        """Every key set advertised in round `r`, in event (chain) order; empty in a plain round."""
        from swarmd.ledger.events import advertised_keys

        # One block for the count and the logs: an advertise mined in between cannot make them disagree.
        head = self.block_number()
        info = RoundInfo.from_chain(self._call("getRound", arg.uint(r, "round"), block=head))
        return advertised_keys(self, info, head)

    def commit(
        self, r: int, update_hash: bytes, n_samples: int, *, milli_epsilon: int = 0, key_count: int = 0
    ) -> TxReceipt:
        """Commit to an update; `milli_epsilon` is this site's cumulative epsilon x1000 (0: no DP account),
        `key_count` the number of advertised key sets the update was masked against (0: plain round)."""
        n = arg.uint(n_samples, "n_samples", arg.UINT32_MAX)
        eps = arg.uint(milli_epsilon, "milli_epsilon", arg.UINT32_MAX)
        keys = arg.uint(key_count, "key_count", arg.UINT16_MAX)
        h = arg.bytes32(update_hash, "update hash")
        return self._send("commit", arg.uint(r, "round"), h, n, eps, keys)

    def elect(self, r: int) -> TxReceipt:
        return self._send("elect", arg.uint(r, "round"))

    def reelect(self, r: int) -> TxReceipt:
        return self._send("reelect", arg.uint(r, "round"))

    def finalize(
        self, r: int, merged_hash: bytes, included: Sequence[str], recovered: Sequence[str] = ()
    ) -> TxReceipt:
        """Close round `r`; `recovered` are the committers whose masks were recovered from shares."""
        sites = [arg.address(a, "included site") for a in included]
        dropped = [arg.address(a, "recovered site") for a in recovered]
        h = arg.bytes32(merged_hash, "merged hash")
        return self._send("finalize", arg.uint(r, "round"), h, sites, dropped)

    # ------------------------------------------------------------------ machinery
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
        return self._transact(getattr(self.contract.functions, name)(*args), name)

    def _transact(self, fn: Any, label: str) -> TxReceipt:
        if self.account is None:
            raise LedgerError(f"cannot send {label}: this ledger client has no account (read-only)")
        with self._lock:
            for attempt in range(_NONCE_ATTEMPTS):
                signed, tx = self._build_and_sign(fn)
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

    def _build_and_sign(self, fn: Any) -> tuple[Any, dict[str, Any]]:
        if self.account is None:  # _transact checked; this keeps the type narrow
            raise LedgerError("this ledger client has no account (read-only)")
        sender = self.account.address
        # The node's pending count is the authority: a locally cached nonce goes stale when the chain
        # rewinds (node restored from an older state) and a gapped transaction would never be mined.
        # Sends are serialised by the lock, and a race with another holder of the key is "nonce too low".
        nonce = int(self._rpc(lambda: self.w3.eth.get_transaction_count(sender, "pending")))
        try:
            # Estimated against "pending" (the next block), where the transaction will land: elect() and
            # reelect() depend on block.number, and a view of "latest" is one block behind them.
            params = {"from": sender, "nonce": nonce}
            gas = self._rpc(lambda: fn.estimate_gas(params, block_identifier="pending"))
        except ContractLogicError as exc:
            raise self._revert(exc) from None
        # Estimates can fall short (refunds; transactions mined first change its path): add a margin.
        gas = int(int(gas) * self.gas_margin) + 10_000
        tx = dict(self._rpc(lambda: fn.build_transaction({"from": sender, "nonce": nonce, "gas": gas})))
        return self.account.sign_transaction(tx), tx

    def _broadcast(self, signed: Any) -> bytes:
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
