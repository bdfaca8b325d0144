"""Contract reverts as Python exceptions, one ContractRevert subclass per Solidity custom error.

The Solidity errors carry the contract's prefix (`SwarmLedgerNotLeader`); the Python classes do not
(`NotLeader`), so callers write `except errors.NotLeader` and match by class. `REVERT_CLASSES` maps each
Solidity name to its class. An instance's `error_name` is the unprefixed name (the class name, stable
across contract versions and what logs show), `solidity_name` the name in the ABI, `error_args` the
decoded arguments, and its hint tells the operator what to do. `RevertDecoder(abi).decode(data)` turns
revert data from the node into the right instance; an error the ABI does not know becomes a plain
ContractRevert (a TransactionFailed when not even its selector is known).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eth_abi import decode as abi_decode
from eth_abi.exceptions import DecodingError
from eth_utils import keccak, to_checksum_address

from swarmd.errors import ContractRevert, LedgerError


class LedgerArgumentError(LedgerError):
    """A value handed to the ledger client cannot be sent (wrong length, out of the ABI's range)."""

    exit_code = 2


class UnknownContract(LedgerError):
    """The address holds no SwarmLedger (no code, or a contract with another interface)."""


class NodeError(LedgerError):
    """The node answered with an error that is not a revert (insufficient funds, wrong chain, bad request)."""


class TransactionFailed(ContractRevert):
    """A mined transaction reverted and the revert could not be reproduced to name it."""


_HINTS: dict[str, str] = {
    "InvalidBinding": "check the task's swarm settings (min_peers >= 1, leader_timeout >= 1) and hashes",
    "NotAdmin": "only the consortium admin may do this; use the admin's keystore",
    "ZeroAddress": "give a non-zero account address",
    "NotPendingAdmin": "only the account named by `swarm admin transfer` may accept; see `swarm admin show`",
    "NoPendingAdmin": "no admin transfer is pending; nothing to cancel",
    "NotActiveMember": "this account is not an active member; `swarm join`, then ask for admission",
    "AlreadyMember": "this account already asked to join or is a member; see `swarm ledger members`",
    "InvalidCurveKey": "the CURVE public key is empty; regenerate the site identity with `swarm init`",
    "CurveKeyTaken": "another account registered this CURVE key; every site needs its own keypair",
    "TooManyPending": "too many join requests wait; the admin or the members must admit or remove some first",
    "InvalidEndpoint": "the endpoint must be 1-256 bytes, e.g. tcp://host:port",
    "InvalidName": "the site name must be at most 32 bytes; see `swarm init --name`",
    "NotPending": "only pending sites can be admitted; see `swarm ledger members`",
    "NotRemovable": "only pending or active sites can be removed",
    "NotMember": "this account has not joined; run `swarm join` first",
    "AlreadyVoted": "this member already voted on that site; wait for the other members",
    "SelfVote": "a member cannot vote on its own admission or removal",
    "WrongRound": "that round is not the current one; resume from the current round (`swarm ledger rounds`)",
    "UnknownRound": "that round has not started yet",
    "RoundNotOpen": "the round already has a leader; commits are closed until the next round",
    "NotElected": "the round has no leader yet; elect first",
    "AlreadyCommitted": "this site already committed in this round; wait for the next round",
    "ZeroHash": "a hash of zero is not a valid model or update hash",
    "ZeroSamples": "a site must train on at least one sample before it commits",
    "RoundFull": "the round holds the maximum number of commits; wait for the next round",
    "NotEnoughCommits": "wait until at least minPeers sites have committed",
    "CommitWindowOpen": "not every member has committed; wait until the commit window closes",
    "CommitsClosed": "commits closed (secrets may be revealed); take part in the next round",
    "ZeroSeal": "a commit needs the seal of a fresh election secret (receipt.election_seal)",
    "RevealNotOpen": "commits are still open; reveal once they close (Ledger.can_reveal)",
    "RevealClosed": "the reveal window ended or the round has a leader; this site sits the round out",
    "BadReveal": "the secret does not open this site's seal; reveal the secret kept in the journal",
    "AlreadyRevealed": "this site already revealed its secret in this round",
    "RevealWindowOpen": "not every committer revealed; wait until the reveal window ends",
    "LeaderTimeoutNotReached": "the leader still has time to finalize; retry after the timeout",
    "NotLeader": "only the round's current leader may finalize",
    "NothingIncluded": "a merged model must include at least one committed update",
    "NotCommitter": "this account did not commit in that round (only committers reveal or dispute)",
    "OutcomeCount": "finalize gives exactly one outcome per commit, in commit order",
    "UnknownOutcome": "an outcome byte must be one of swarmd.ledger.Outcome",
    "RevealOutcome": "NOT_REVEALED is required for exactly the committers that did not reveal",
    "NotFinalized": "only a finalized round can be attested or disputed; see `swarm ledger rounds`",
    "NoDeliveryClaim": "the finalize did not say this site's update failed to arrive; nothing to dispute",
    "AlreadyDisputed": "this site already disputed this round",
    "BadSignature": "the receipt signature is malformed; use the one the leader returned with its ack",
    "ReceiptNotLeader": "the receipt was not signed by this round's leader for this site, term and hash",
    "KeysClosed": "the round's first commit closed advertising; take part in the next round",
    "AlreadyAdvertised": "this site already advertised keys in this round; reuse the keys it persisted",
    "SecureAggregationOff": "this task was deployed without secure aggregation: no keys to advertise",
    "ZeroKey": "a secure-aggregation public key of zero is not a key; generate a fresh X25519 pair",
    "StaleKeys": "keys were advertised after the update was masked; re-read them, re-mask and commit again",
}


def _signature(entry: dict[str, Any]) -> str:
    return f"{entry['name']}({','.join(_abi_type(i) for i in entry.get('inputs', []))})"


def _abi_type(inp: dict[str, Any]) -> str:
    t = str(inp["type"])
    if t.startswith("tuple"):
        return "(" + ",".join(_abi_type(c) for c in inp["components"]) + ")" + t[len("tuple") :]
    return t


# Every custom error of ISwarmLedger starts with this (OpenZeppelin's convention: the contract names it).
SOLIDITY_PREFIX = "SwarmLedger"


def unprefixed(solidity_name: str) -> str:
    """`SwarmLedgerNotLeader` -> `NotLeader`; a name without the prefix is returned as it is."""
    return solidity_name.removeprefix(SOLIDITY_PREFIX)


class NamedRevert(ContractRevert):
    """Base of the per-error classes: the class name is the Solidity error name without its prefix."""

    default_hint: str | None = None
    solidity_name: str = ""

    def __init__(self, args: tuple[object, ...] = (), *, hint: str | None = None) -> None:
        super().__init__(type(self).__name__, args, hint=hint if hint is not None else self.default_hint)


def _make_class(name: str) -> type[NamedRevert]:
    hint = _HINTS.get(name)
    solidity = SOLIDITY_PREFIX + name
    doc = f"The contract reverted with {solidity}." + (f" Hint: {hint}" if hint else "")
    attrs = {"default_hint": hint, "solidity_name": solidity, "__doc__": doc, "__module__": __name__}
    return type(name, (NamedRevert,), attrs)


# One class per custom error of ISwarmLedger, bound at import so callers can `except errors.NotLeader`.
InvalidBinding = _make_class("InvalidBinding")
NotAdmin = _make_class("NotAdmin")
ZeroAddress = _make_class("ZeroAddress")
NotPendingAdmin = _make_class("NotPendingAdmin")
NoPendingAdmin = _make_class("NoPendingAdmin")
NotActiveMember = _make_class("NotActiveMember")
AlreadyMember = _make_class("AlreadyMember")
InvalidCurveKey = _make_class("InvalidCurveKey")
CurveKeyTaken = _make_class("CurveKeyTaken")
TooManyPending = _make_class("TooManyPending")
InvalidEndpoint = _make_class("InvalidEndpoint")
InvalidName = _make_class("InvalidName")
NotPending = _make_class("NotPending")
NotRemovable = _make_class("NotRemovable")
NotMember = _make_class("NotMember")
AlreadyVoted = _make_class("AlreadyVoted")
SelfVote = _make_class("SelfVote")
WrongRound = _make_class("WrongRound")
UnknownRound = _make_class("UnknownRound")
RoundNotOpen = _make_class("RoundNotOpen")
NotElected = _make_class("NotElected")
AlreadyCommitted = _make_class("AlreadyCommitted")
ZeroHash = _make_class("ZeroHash")
ZeroSamples = _make_class("ZeroSamples")
RoundFull = _make_class("RoundFull")
NotEnoughCommits = _make_class("NotEnoughCommits")
CommitWindowOpen = _make_class("CommitWindowOpen")
CommitsClosed = _make_class("CommitsClosed")
ZeroSeal = _make_class("ZeroSeal")
RevealNotOpen = _make_class("RevealNotOpen")
RevealClosed = _make_class("RevealClosed")
BadReveal = _make_class("BadReveal")
AlreadyRevealed = _make_class("AlreadyRevealed")
RevealWindowOpen = _make_class("RevealWindowOpen")
LeaderTimeoutNotReached = _make_class("LeaderTimeoutNotReached")
NotLeader = _make_class("NotLeader")
NothingIncluded = _make_class("NothingIncluded")
NotCommitter = _make_class("NotCommitter")
OutcomeCount = _make_class("OutcomeCount")
UnknownOutcome = _make_class("UnknownOutcome")
RevealOutcome = _make_class("RevealOutcome")
NotFinalized = _make_class("NotFinalized")
NoDeliveryClaim = _make_class("NoDeliveryClaim")
AlreadyDisputed = _make_class("AlreadyDisputed")
BadSignature = _make_class("BadSignature")
ReceiptNotLeader = _make_class("ReceiptNotLeader")
KeysClosed = _make_class("KeysClosed")
AlreadyAdvertised = _make_class("AlreadyAdvertised")
ZeroKey = _make_class("ZeroKey")
SecureAggregationOff = _make_class("SecureAggregationOff")
StaleKeys = _make_class("StaleKeys")

# Solidity (ABI) name -> class; a test checks that it covers every error in the artifact's ABI.
REVERT_CLASSES: dict[str, type[NamedRevert]] = {
    cls.solidity_name: cls
    for name, cls in globals().items()
    if isinstance(cls, type) and issubclass(cls, NamedRevert) and name in _HINTS
}


class RevertDecoder:
    """Maps 4-byte selectors of the ABI's custom errors to their names and argument types."""

    def __init__(self, abi: Sequence[dict[str, Any]]) -> None:
        self._by_selector: dict[bytes, tuple[str, list[str]]] = {}
        for entry in abi:
            if entry.get("type") == "error":
                selector = keccak(text=_signature(entry))[:4]
                types = [_abi_type(i) for i in entry.get("inputs", [])]
                self._by_selector[selector] = (str(entry["name"]), types)

    @property
    def names(self) -> set[str]:
        return {name for name, _ in self._by_selector.values()}

    def known(self, data: bytes | str | None) -> ContractRevert | None:
        """`decode(data)` when `data` is one of the ABI's custom errors, else None."""
        raw = _as_bytes(data)
        return self.decode(raw) if raw[:4] in self._by_selector else None

    def decode(self, data: bytes | str | None) -> ContractRevert:
        raw = _as_bytes(data)
        known = self._by_selector.get(raw[:4]) if len(raw) >= 4 else None
        if known is None:
            return TransactionFailed("UnknownRevert", ("0x" + raw.hex(),) if raw else ())
        name, types = known
        try:
            args = tuple(_plain(t, v) for t, v in zip(types, abi_decode(types, raw[4:]), strict=True))
        except DecodingError:
            args = ("0x" + raw[4:].hex(),)
        cls = REVERT_CLASSES.get(name)
        return cls(args) if cls is not None else ContractRevert(unprefixed(name), args)


def _as_bytes(data: bytes | str | None) -> bytes:
    if data is None:
        return b""
    if isinstance(data, bytes):
        return data
    text = data[2:] if data.startswith("0x") else data
    try:
        return bytes.fromhex(text)
    except ValueError:
        return b""


def _plain(abi_type: str, value: Any) -> Any:
    # eth_abi returns lower-case addresses; checksum them so they compare equal to account.address.
    return to_checksum_address(value) if abi_type == "address" else value
