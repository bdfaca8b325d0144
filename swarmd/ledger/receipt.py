"""Delivery receipts and election seals: the two things a site signs or hashes off chain that the
contract checks later.

A receipt is the leader's EIP-712 signature (with its account key) saying "in round R, term T, I
received from SITE the update hashing to H". The leader gives one for every update it accepts; a
committer that the finalize then calls not delivered publishes it with `dispute()`, and the contract
recovers the signer and compares it with the round's leader. EIP-712 binds the signature to this
chain and this contract, so a receipt cannot be replayed against another consortium.

An election seal is keccak256(abi.encode(secret, site, round)): committed with the update and opened by
`reveal()`. The site and round inside the hash stop a member from copying another's seal and
revealing its secret once that secret is public.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_abi import encode
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address

from swarmd.errors import LedgerError

DOMAIN_NAME = "SwarmLedger"
DOMAIN_VERSION = "1"
SIGNATURE_BYTES = 65
_TYPES = {
    "Receipt": [
        {"name": "round", "type": "uint256"},
        {"name": "term", "type": "uint32"},
        {"name": "site", "type": "address"},
        {"name": "updateHash", "type": "bytes32"},
    ]
}


class BadReceipt(LedgerError):
    """A receipt signature is malformed or was not made by the key it claims."""


@dataclass(frozen=True)
class Receipt:
    """What a leader signs for an update it accepted."""

    round: int
    term: int
    site: str  # the committer's account
    update_hash: bytes  # 32 bytes: the hash it committed on chain

    def message(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "term": self.term,
            "site": to_checksum_address(self.site),
            "updateHash": self.update_hash,
        }


def _domain(contract: str, chain_id: int) -> dict[str, Any]:
    return {
        "name": DOMAIN_NAME,
        "version": DOMAIN_VERSION,
        "chainId": chain_id,
        "verifyingContract": to_checksum_address(contract),
    }


def _signable(contract: str, chain_id: int, receipt: Receipt) -> Any:
    if len(receipt.update_hash) != 32:
        raise BadReceipt(f"a receipt's update hash is 32 bytes, got {len(receipt.update_hash)}")
    return encode_typed_data(_domain(contract, chain_id), _TYPES, receipt.message())


def sign_receipt(account: LocalAccount, contract: str, chain_id: int, receipt: Receipt) -> bytes:
    """The leader's 65-byte signature (r, s, v) over `receipt`, bound to this chain and contract."""
    return bytes(account.sign_message(_signable(contract, chain_id, receipt)).signature)


def receipt_signer(contract: str, chain_id: int, receipt: Receipt, signature: bytes) -> str:
    """The account that signed `receipt` (checksummed). Raises BadReceipt on a malformed signature."""
    if len(signature) != SIGNATURE_BYTES:
        raise BadReceipt(f"a receipt signature is {SIGNATURE_BYTES} bytes, got {len(signature)}")
    try:
        signer = Account.recover_message(_signable(contract, chain_id, receipt), signature=signature)
    except Exception as exc:  # eth-keys raises several types for a bad (r, s, v)
        raise BadReceipt(f"cannot recover a signer from the receipt: {exc}") from exc
    return str(signer)


def election_seal(secret: bytes, site: str, round_id: int) -> bytes:
    """keccak256(abi.encode(bytes32 secret, address site, uint256 round)): what commit() carries."""
    if len(secret) != 32:
        raise LedgerError(f"an election secret is 32 bytes, got {len(secret)}")
    return keccak(encode(["bytes32", "address", "uint256"], [secret, to_checksum_address(site), round_id]))
