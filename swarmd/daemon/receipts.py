"""Delivery receipts, the daemon's side: the leader signs one for each update it accepts, the committer
checks that the round's leader signed it and keeps it under its state dir (`ReceiptBook`), one small
JSON file per round, for `swarm ledger dispute` to publish if the finalize calls it not delivered.

What is signed and what a receipt proves is ledger/receipt.py's (and docs/protocol.md's). A missing or
invalid receipt is logged and counted (`swarmd_receipts_total{outcome}`), never a reason to fail a
round: the leader did accept the update, the site only loses the means to dispute its exclusion.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from pathlib import Path

from eth_utils import is_address, to_checksum_address

from swarmd.daemon.plumbing import RoundPlumbing
from swarmd.errors import StoreError
from swarmd.fsutil import atomic_write_text
from swarmd.ledger import RoundInfo
from swarmd.ledger.receipt import SIGNATURE_BYTES, BadReceipt, Receipt, receipt_signer, sign_receipt

log = logging.getLogger("swarmd.receipts")

RECEIPT_VERSION = 1
CHAIN_ID_WAIT = 5.0  # seconds a leader waits for the chain id before acknowledging without a receipt


class CorruptReceipt(StoreError):
    """A stored receipt file cannot be read back; the other rounds' receipts are untouched."""


class ReceiptBook:
    """The receipts this site holds, `<state_dir>/receipts/round-<r>.json`: the latest term's per round."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = Path(state_dir) / "receipts"

    def path(self, r: int) -> Path:
        return self.dir / f"round-{r:06d}.json"

    def put(self, receipt: Receipt, signature: bytes) -> Path:
        """Keep `receipt` and the leader's signature, replacing any earlier term's (atomically)."""
        if len(signature) != SIGNATURE_BYTES or len(receipt.update_hash) != 32:
            raise BadReceipt(f"round {receipt.round}: not a receipt ({len(signature)}-byte signature)")
        doc = {
            "v": RECEIPT_VERSION,
            "round": receipt.round,
            "term": receipt.term,
            "site": to_checksum_address(receipt.site),
            "update_hash": "0x" + receipt.update_hash.hex(),
            "signature": "0x" + signature.hex(),
        }
        return atomic_write_text(self.path(receipt.round), json.dumps(doc, indent=1) + "\n", mode=0o600)

    def get(self, r: int) -> tuple[Receipt, bytes] | None:
        """The receipt kept for round `r`, or None. Raises CorruptReceipt when its file is unreadable."""
        path = self.path(r)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise CorruptReceipt(f"cannot read {path}: {exc}") from None
        try:
            return _parse(json.loads(text), r)
        except (ValueError, TypeError, KeyError) as exc:
            raise CorruptReceipt(
                f"{path} is not a receipt of round {r}: {exc}",
                hint="it is evidence for a dispute: move it aside rather than delete it",
            ) from None

    def rounds(self) -> list[int]:
        """The rounds a receipt file exists for (readable or not), ascending."""
        found = (p.stem.removeprefix("round-") for p in self.dir.glob("round-*.json"))
        return sorted(int(s) for s in found if s.isdigit())


def _hex(value: object, size: int) -> bytes:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise ValueError("expected 0x-prefixed hex")
    raw = bytes.fromhex(value[2:])
    if len(raw) != size:
        raise ValueError(f"expected {size} bytes, got {len(raw)}")
    return raw


def _parse(doc: object, r: int) -> tuple[Receipt, bytes]:
    if not isinstance(doc, dict) or doc.get("v") != RECEIPT_VERSION:
        raise ValueError(f"not a version {RECEIPT_VERSION} receipt")
    rnd, term, site = doc["round"], doc["term"], doc["site"]
    if (
        type(rnd) is not int
        or rnd != r
        or not isinstance(term, int)
        or isinstance(term, bool)
        or not 0 <= term < 1 << 32
    ):
        raise ValueError(f"round {rnd!r}, term {term!r}")
    if not isinstance(site, str) or not is_address(site):
        raise ValueError(f"site {site!r} is not an address")
    receipt = Receipt(r, term, to_checksum_address(site), _hex(doc["update_hash"], 32))
    return receipt, _hex(doc["signature"], SIGNATURE_BYTES)


class ReceiptSide(RoundPlumbing):
    """Signing receipts as a leader, checking and keeping them as a committer."""

    _chain_id: int | None = None

    @functools.cached_property
    def receipts(self) -> ReceiptBook:
        return ReceiptBook(self.journal.path.parent)  # the journal lives at the top of the state dir

    async def receipt_chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = await self.chain(self.ledger.chain_id)
        return self._chain_id

    async def sign_delivery(self, receipt: Receipt) -> bytes | None:
        """The leader's signature over `receipt`, or None (logged) when it cannot make one now."""
        account = self.ledger.account
        try:
            chain_id = await asyncio.wait_for(self.receipt_chain_id(), CHAIN_ID_WAIT)
        except asyncio.TimeoutError:
            chain_id = None
        if account is None or chain_id is None:
            self.metrics.receipt("unsigned")
            log.error("round %d: cannot sign a receipt (no account or chain id)", receipt.round)
            return None
        return sign_receipt(account, self.ledger.address, chain_id, receipt)

    async def keep_receipt(self, r: int, info: RoundInfo, signature: bytes | None) -> bool:
        """Check that `info`'s leader signed our delivery of round `r` and keep the receipt."""
        leader = self.names.label(info.leader or "")
        mine = info.commit_of(self.me)
        if signature is None or mine is None:
            self.metrics.receipt("missing")
            log.warning("round %d: leader %s accepted our update without a receipt", r, leader)
            return False
        receipt = Receipt(r, info.term, self.me, mine.update_hash)
        try:
            signer = receipt_signer(self.ledger.address, await self.receipt_chain_id(), receipt, signature)
            if signer.lower() != (info.leader or "").lower():
                raise BadReceipt(f"signed by {signer}, not by the leader")
            self.receipts.put(receipt, signature)
        except (BadReceipt, StoreError) as exc:
            self.metrics.receipt("invalid" if isinstance(exc, BadReceipt) else "unsaved")
            log.warning("round %d: receipt from leader %s not kept: %s", r, leader, exc)
            return False
        self.metrics.receipt("kept")
        log.info("round %d: kept leader %s's receipt for term %d", r, leader, info.term)
        return True
