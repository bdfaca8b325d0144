"""A leader's unmask transcripts: kept before it finalizes a secure-aggregation round, served to members.

The transcript (`swarmd.privacy.transcript`) is what the leader rebuilt and used to unmask the sum: the
survivors' self-mask seeds, the dropped sites' mask keys, the survivor-absent pair seeds. It is written
atomically (0600: it holds secrets the leader learned) to `<state>/secagg/transcripts/` before the
finalize transaction, so a finalized round always has one, and kept as long as the committed updates.
An active member asks for it over the transport's `secagg` message (topic `transcript`, body the id
`transcript_id(round, term, merged hash)`); it is served only once the chain shows the round finalized
with that term and model, so no member ever sees the transcript of a term that did not finalize.
"""

from __future__ import annotations

import logging
from pathlib import Path

from swarmd.daemon.plumbing import RoundPlumbing
from swarmd.errors import StoreError
from swarmd.fsutil import atomic_write
from swarmd.ledger import RoundStatus
from swarmd.privacy import SecAggError, Unmasker, UnmaskTranscript
from swarmd.privacy.transcript import transcript_file
from swarmd.transport import Refusal, SecAggHeader, Verdict

log = logging.getLogger("swarmd.secagg")


class TranscriptSide(RoundPlumbing):
    """Keeping and serving this site's unmask transcripts (for `swarm ledger audit`)."""

    state_dir: Path

    def keep_transcript(self, r: int, unmasker: Unmasker, merged_hash: bytes) -> None:
        """Write what the unmasking of round r used, bound to the model it made. A transcript that cannot
        be written is logged, not fatal: the round is still finalized, but cannot be audited."""
        used = unmasker.transcript
        if used is None:
            return
        path = transcript_file(self.state_dir, r)
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            atomic_write(path, used.bound_to(merged_hash).to_bytes(), mode=0o600)
        except (SecAggError, StoreError, OSError) as exc:
            log.error("round %d: unmask transcript not kept (%s): the round cannot be audited", r, exc)

    def holds_transcript(self, r: int) -> bool:
        return transcript_file(self.state_dir, r).exists()

    async def serve_transcript(self, header: SecAggHeader, sender: str, body: bytes) -> bytes | Verdict:
        """The transcript of round `header.round` whose id is `body`, once the chain shows that term's
        model finalized; else a refusal (counted and logged)."""
        r = header.round
        try:
            raw = transcript_file(self.state_dir, r).read_bytes()
        except OSError:
            why = f"this site keeps no unmask transcript of round {r}"
            return self.refuse_secagg("no_transcript", Refusal.NOT_FOUND, header, sender, why)
        held = UnmaskTranscript.from_bytes(raw)  # BadTranscript (a SecAggError): refused and counted
        if held.id != body:
            why = f"the transcript held for round {r} (term {held.term}) is not the one asked for"
            return self.refuse_secagg("no_transcript", Refusal.NOT_FOUND, header, sender, why)
        info = await self.chain(self.ledger.round, r)
        if (info.status, info.term, info.merged_hash) != (RoundStatus.FINALIZED, held.term, held.merged):
            why = f"round {r} is not finalized with the model of this site's term {held.term}"
            return self.refuse_secagg("not_finalized", Refusal.NOT_READY, header, sender, why)
        return raw

    def refuse_secagg(
        self, reason: str, refusal: Refusal, header: SecAggHeader, sender: str, why: str
    ) -> Verdict:
        self.metrics.rejection(f"secagg_{reason}")
        topic = header.topic.value
        log.warning("round %d: refused a secagg %s from %s: %s", header.round, topic, sender, why)
        return Verdict(False, refusal, why)
