"""The Ledger client: synchronous calls and transactions against one SwarmLedger over JSON-RPC (web3 8).

Every transaction is signed locally with the site's account, gets its nonce from here (recovering after
"nonce too low"), is rebroadcast if the node forgets it, and is waited on until its receipt. Calls and
transactions retry with exponential backoff while the endpoint is unreachable and raise ChainUnavailable
after `retries`. A revert raises the ContractRevert subclass named after the Solidity custom error.
The daemon calls this from a worker thread; one lock serialises this client's transactions. The machinery
for all of that is `ContractRpc` (ledger/rpc.py); this module is the contract's API.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from web3.types import TxReceipt

from swarmd.errors import LedgerError
from swarmd.ledger import args as arg
from swarmd.ledger.artifact import load_artifact
from swarmd.ledger.errors import LedgerArgumentError, RevertDecoder, UnknownContract
from swarmd.ledger.rpc import ContractRpc, make_web3
from swarmd.ledger.types import (
    AdvertisedKeys,
    Attestation,
    Binding,
    DeployParams,
    Dispute,
    ElectionView,
    Member,
    MemberStatus,
    Outcome,
    RoundInfo,
    RoundStart,
    VoteTally,
)
from swarmd.ledger.views import Views

if TYPE_CHECKING:
    from swarmd.ledger.events import EventStream


_LOG_ATTEMPTS = 5  # reads of a round's KeysAdvertised logs before the node is called incomplete


class Ledger(ContractRpc):
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
        self.views = Views(artifact.abi, self.w3.codec)
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
            arg.uint(params.reveal_window, "reveal_window", arg.UINT32_MAX),
            bool(params.majority_admission),
            bool(params.secure_aggregation),
        )
        # A throwaway client (zero address) gives deploy the same signing, retry and revert machinery.
        bootstrap = cls(rpc_url, "0x" + "00" * 20, account, poa=poa, **kwargs)
        factory = bootstrap.w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
        receipt = bootstrap._transact(lambda: factory.constructor(*args), "deploy")
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
        task, model, min_peers, window, timeout, reveal, majority, admin, deploy_block, secagg = self._call(
            "binding"
        )
        params = DeployParams(
            bytes(task),
            bytes(model),
            int(min_peers),
            int(window),
            int(timeout),
            bool(majority),
            bool(secagg),
            reveal_window=int(reveal),
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

    def round(self, r: int, block: str = "latest") -> RoundInfo:
        """Round `r` as of `block`: "latest", or "pending" for the next block (the one a view read at
        "pending", like `can_reveal`, speaks of)."""
        return RoundInfo.from_chain(self._call("getRound", arg.uint(r, "round"), block=block))

    def rounds(self) -> list[RoundInfo]:
        """Every round so far, oldest first, the current (open or elected) one last."""
        return [self.round(r) for r in range(self.current_round() + 1)]

    def base_hash(self, r: int) -> bytes:
        return bytes(self._call("baseHash", arg.uint(r, "round")))

    def has_committed(self, r: int, site: str) -> bool:
        return bool(self._call("hasCommitted", arg.uint(r, "round"), arg.address(site, "site")))

    def can_reveal(self, r: int) -> bool:
        """True when a committer of round `r` that has not revealed could reveal in the next block."""
        return bool(self._call("canReveal", arg.uint(r, "round"), block="pending"))

    def disputes_against(self, account: str) -> int:
        """How many disputes (receipts contradicting its finalize) were recorded against `account`."""
        return int(self._call("disputesAgainst", arg.address(account)))

    def attestations(self, from_block: int = 0) -> list[Attestation]:
        """Every Attested event from `from_block` to the head, in chain order."""
        from swarmd.ledger.events import attestations

        return attestations(self, from_block, self.block_number())

    def disputes(self, from_block: int = 0) -> list[Dispute]:
        """Every Disputed event from `from_block` to the head, in chain order."""
        from swarmd.ledger.events import disputes

        return disputes(self, from_block, self.block_number())

    def can_elect(self, r: int) -> bool:
        """True when elect(r) would succeed in the next block (a free view: call it before spending gas):
        commits have closed and every committer revealed or the reveal window ended."""
        # "pending": evaluated as the next block, where a transaction sent now lands (on nodes without a
        # pending block, e.g. Besu, this is the latest block and the answer is one block conservative).
        return bool(self._call("canElect", arg.uint(r, "round"), block="pending"))

    def round_start(self, r: int) -> RoundStart:
        """`members()`, `current_round()` and, when round `r` is the current one, `round(r)`, in one round
        trip. Raises UnknownRound when `r` is past the current round (ask for the round after the one
        last played: the finalize that ended it opened `r`)."""
        current, members, info = self._call_many(
            [
                ("currentRound", (), "latest"),
                ("getMembers", (), "latest"),
                ("getRound", (arg.uint(r, "round"),), "latest"),
            ]
        )
        return RoundStart(
            [Member.from_chain(m) for m in members],
            int(current),
            RoundInfo.from_chain(info) if int(current) == r else None,
        )

    def election_view(self, r: int) -> ElectionView:
        """`round(r)`, `can_reveal(r)` and `can_elect(r)` in one round trip (one JSON-RPC batch)."""
        rr = (arg.uint(r, "round"),)
        info, reveal, elect = self._call_many(
            [("getRound", rr, "latest"), ("canReveal", rr, "pending"), ("canElect", rr, "pending")]
        )
        return ElectionView(RoundInfo.from_chain(info), bool(reveal), bool(elect))

    def can_reelect(self, r: int) -> bool:
        """True when reelect(r) would succeed in the next block."""
        return bool(self._call("canReelect", arg.uint(r, "round"), block="pending"))

    def site_names(self, from_block: int | None = None, to_block: int | None = None) -> dict[str, str]:
        """account -> the site name it joined under (from JoinRequested events; valid names only).
        From the deploy block unless `from_block` is given, to the head unless `to_block` is."""
        from swarmd.ledger.events import join_names

        start = self.binding_info().deploy_block if from_block is None else from_block
        return join_names(self, start, self.block_number() if to_block is None else to_block)

    def vote_tally(self, receipt: TxReceipt) -> VoteTally | None:
        """The majority-mode ballot `receipt`'s admit or remove cast; None for a direct decision."""
        from swarmd.ledger.events import vote_tally

        return vote_tally(self, receipt)

    def events(self, from_block: int = 0, *, confirmations: int = 0) -> EventStream:
        from swarmd.ledger.events import EventStream

        return EventStream(self, from_block, confirmations=confirmations)

    # ------------------------------------------------------------------ transactions
    def request_join(self, curve_key: bytes, endpoint: str, name: str = "") -> TxReceipt:
        """Ask to join; `name` (at most 32 bytes, see config.check_site_name) is published in the event."""
        return self._send("requestJoin", arg.curve_key_raw(curve_key), endpoint, name)

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

        # One block for the count and the logs, so an advertise mined in between cannot make them disagree.
        # Yet a node may answer a call at its newest block from state that already holds the block it is
        # mining, before that block's logs are served (anvil, measured: a balance at block n that counts
        # block n+1's transfers). So a disagreement is read again, head and count too, before the node's
        # log index is called incomplete.
        for attempt in range(_LOG_ATTEMPTS):
            head = self.block_number()
            info = RoundInfo.from_chain(self._call("getRound", arg.uint(r, "round"), block=head))
            try:
                return advertised_keys(self, info, head)
            except LedgerError:
                if attempt == _LOG_ATTEMPTS - 1:
                    raise
                time.sleep(0.1 * (attempt + 1))
        raise AssertionError("unreachable")

    def commit(
        self,
        r: int,
        update_hash: bytes,
        n_samples: int,
        *,
        seal: bytes,
        milli_epsilon: int = 0,
        key_count: int = 0,
    ) -> TxReceipt:
        """Commit to an update with the election `seal` (receipt.election_seal of a fresh secret);
        `milli_epsilon` is this site's cumulative epsilon x1000 (0: no DP account), `key_count` the number
        of advertised key sets the update was masked against (0: plain round)."""
        n = arg.uint(n_samples, "n_samples", arg.UINT32_MAX)
        eps = arg.uint(milli_epsilon, "milli_epsilon", arg.UINT32_MAX)
        keys = arg.uint(key_count, "key_count", arg.UINT16_MAX)
        h = arg.bytes32(update_hash, "update hash")
        sealed = arg.bytes32(seal, "election seal")
        return self._send("commit", arg.uint(r, "round"), h, n, eps, keys, sealed)

    def reveal(self, r: int, secret: bytes) -> TxReceipt:
        """Open this site's election seal of round `r` with its 32-byte secret."""
        return self._send("reveal", arg.uint(r, "round"), arg.bytes32(secret, "election secret"))

    def elect(self, r: int) -> TxReceipt:
        return self._send("elect", arg.uint(r, "round"))

    def reelect(self, r: int) -> TxReceipt:
        return self._send("reelect", arg.uint(r, "round"))

    def finalize(self, r: int, merged_hash: bytes, outcomes: Mapping[str, Outcome]) -> TxReceipt:
        """Close round `r`, accounting for every committer: `outcomes` maps each committer's account to its
        Outcome. Refused before sending (LedgerArgumentError) when a committer is missing or an account
        did not commit; the contract checks the rest (NOT_REVEALED exactly for non-revealers, >= 1 INCLUDED)
        """
        h = arg.bytes32(merged_hash, "merged hash")
        try:
            given = {arg.address(a, "finalized site"): Outcome(o) for a, o in outcomes.items()}
        except ValueError as exc:
            raise LedgerArgumentError(f"round {r}: not an outcome: {exc}") from None
        info = self.round(r)
        order = [arg.address(c.site, "committer") for c in info.commits]
        unknown = sorted(set(given) - set(order))
        missing = [a for a in order if a not in given]
        if unknown or missing:
            raise LedgerArgumentError(
                f"round {r}: finalize must give one outcome per committer"
                + (f"; missing {', '.join(missing)}" if missing else "")
                + (f"; not committers {', '.join(unknown)}" if unknown else "")
            )
        codes = bytes(int(given[a]) for a in order)
        return self._send("finalize", arg.uint(r, "round"), h, codes)

    def attest(self, r: int, ok: bool) -> TxReceipt:
        """Publish whether this member's audit of finalized round `r` agreed with its merged model."""
        return self._send("attest", arg.uint(r, "round"), bool(ok))

    def dispute(self, r: int, signature: bytes) -> TxReceipt:
        """Contest this site's delivery-claim outcome in round `r` with the leader's receipt signature."""
        if not isinstance(signature, bytes | bytearray):
            raise LedgerArgumentError(f"a receipt signature is bytes, got {type(signature).__name__}")
        return self._send("dispute", arg.uint(r, "round"), bytes(signature))
