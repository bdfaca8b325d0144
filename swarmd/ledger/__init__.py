"""The chain: the SwarmLedger artifact, the Ledger client (calls, transactions, event stream) and the
local anvil devnet. Everything above this package talks to the contract only through `Ledger`.
"""

from swarmd.ledger import errors
from swarmd.ledger.artifact import Artifact, load_artifact
from swarmd.ledger.client import Ledger
from swarmd.ledger.devnet import Devnet, find_anvil
from swarmd.ledger.events import EventStream
from swarmd.ledger.types import (
    AdvertisedKeys,
    Attestation,
    Binding,
    CommitInfo,
    DeployParams,
    Dispute,
    ElectionView,
    LedgerEvent,
    Member,
    MemberStatus,
    Outcome,
    RoundInfo,
    RoundStart,
    RoundStatus,
    VoteTally,
)

__all__ = [
    "AdvertisedKeys",
    "Artifact",
    "Attestation",
    "Binding",
    "CommitInfo",
    "DeployParams",
    "Devnet",
    "Dispute",
    "ElectionView",
    "EventStream",
    "Ledger",
    "LedgerEvent",
    "Member",
    "MemberStatus",
    "Outcome",
    "RoundInfo",
    "RoundStart",
    "RoundStatus",
    "VoteTally",
    "errors",
    "find_anvil",
    "load_artifact",
]
