"""Privacy for the round: secure aggregation (SecAgg+ with the leader as a peer) and differential privacy.

This package imports no other subsystem: it takes and returns bytes, numpy arrays and dataclasses; the
daemon moves the bytes (transport) and reads the facts (ledger). The secure-aggregation protocol and its
message flow are in docs/protocol.md ("Secure aggregation"). Differential privacy (the plan, the Opacus
accountant, site-level noise) is the subpackage `swarmd.privacy.dp`.
"""

from swarmd.privacy.errors import (
    BadRequest,
    BadResponse,
    BadSecrets,
    BadShare,
    BadTranscript,
    BadUpdate,
    BadVaultState,
    BelowThreshold,
    DoubleReveal,
    InconsistentShares,
    ReplayedRequest,
    SecAggError,
)
from swarmd.privacy.keys import RoundSecrets
from swarmd.privacy.params import Advertised, SecAggParams, graph_seed, neighbourhood, threshold_for
from swarmd.privacy.site import make_shares, mask_update
from swarmd.privacy.transcript import UnmaskTranscript, masked_total, transcript_id, unmask_sum
from swarmd.privacy.unmask import Unmasker
from swarmd.privacy.vault import ShareVault
from swarmd.privacy.wire import RevealRequest, RevealResponse

__all__ = [
    "Advertised",
    "BadRequest",
    "BadResponse",
    "BadSecrets",
    "BadShare",
    "BadTranscript",
    "BadUpdate",
    "BadVaultState",
    "BelowThreshold",
    "DoubleReveal",
    "InconsistentShares",
    "ReplayedRequest",
    "RevealRequest",
    "RevealResponse",
    "RoundSecrets",
    "SecAggError",
    "SecAggParams",
    "ShareVault",
    "UnmaskTranscript",
    "Unmasker",
    "graph_seed",
    "make_shares",
    "mask_update",
    "masked_total",
    "neighbourhood",
    "threshold_for",
    "transcript_id",
    "unmask_sum",
]
