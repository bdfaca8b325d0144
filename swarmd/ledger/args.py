"""Checking the values handed to the ledger client before they are encoded: 32-byte hashes and keys,
addresses, unsigned integers within their ABI type. Each failure is a LedgerArgumentError naming the value.
"""

from __future__ import annotations

from eth_typing import ChecksumAddress
from eth_utils import is_address, to_checksum_address

from swarmd.ledger.errors import LedgerArgumentError

UINT16_MAX = 2**16 - 1
UINT32_MAX = 2**32 - 1


def bytes32(value: bytes | str, what: str) -> bytes:
    if isinstance(value, str):
        text = value[2:] if value.startswith("0x") else value
        try:
            value = bytes.fromhex(text)
        except ValueError:
            raise LedgerArgumentError(f"{what} is not hex: {text[:20]!r}") from None
    if len(value) != 32:
        raise LedgerArgumentError(f"{what} must be 32 bytes, got {len(value)}")
    return bytes(value)


def curve_key_raw(key: bytes) -> bytes:
    """A CURVE public key as 32 raw bytes; accepts the raw form or ZeroMQ's 40-character z85 text."""
    if len(key) == 32:
        return bytes(key)
    if len(key) == 40:
        import zmq.utils.z85 as z85

        try:
            return bytes(z85.decode(key))
        except (ValueError, KeyError) as exc:
            raise LedgerArgumentError(f"CURVE key is not valid z85: {exc}") from exc
    raise LedgerArgumentError(f"CURVE public key must be 32 raw bytes or 40 z85 characters, got {len(key)}")


def address(value: str, what: str = "account") -> ChecksumAddress:
    if not isinstance(value, str) or not is_address(value):
        raise LedgerArgumentError(f"{what} is not an Ethereum address: {value!r}")
    return to_checksum_address(value)


def uint(value: int, what: str, maximum: int = 2**256 - 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise LedgerArgumentError(f"{what} must be an integer in [0, {maximum}], got {value!r}")
    return value
