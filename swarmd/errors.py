"""The one SwarmError tree.

Every boundary (peer frames, chain reads, config, task, checkpoints, data files, CLI input)
raises a named subclass of SwarmError. The CLI maps each family to an exit code, so an operator
sees one line and a non-zero status, never a traceback.

Subsystems may define more specific errors next to their code, but they must subclass one of
the families here so that `exit_code()` keeps working.
"""

from __future__ import annotations


class SwarmError(Exception):
    """Base of every error swarmd raises on purpose. `hint` tells the operator what to do."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint

    def __str__(self) -> str:
        base = super().__str__()
        return f"{base} ({self.hint})" if self.hint else base


# --- configuration and input (exit 2) -----------------------------------------------------------
class ConfigError(SwarmError):
    """A site config file is missing, malformed or fails validation."""

    exit_code = 2


class TaskError(SwarmError):
    """A task spec (swarm.toml plus bundle) is missing, malformed or inconsistent."""

    exit_code = 2


class UsageError(SwarmError):
    """A CLI argument is wrong in a way the argument parser cannot see."""

    exit_code = 2


# --- identity and keys (exit 3) -----------------------------------------------------------------
class IdentityError(SwarmError):
    """Keys are missing, unreadable, or the passphrase is wrong."""

    exit_code = 3


# --- storage (exit 4) ---------------------------------------------------------------------------
class StoreError(SwarmError):
    """The state dir cannot be read or written."""

    exit_code = 4


class CheckpointError(StoreError):
    """A checkpoint file is corrupt, truncated or does not match its content hash."""


class JournalError(StoreError):
    """The round journal is unreadable or inconsistent."""


# --- data and training (exit 5) -----------------------------------------------------------------
class DataError(SwarmError):
    """A data file or data list is missing, corrupt, or of the wrong shape or channel count."""

    exit_code = 5


class TrainingError(SwarmError):
    """Local training failed (non-finite loss, bundle error, aborted)."""

    exit_code = 5


class TrainingAborted(TrainingError):
    """Training or evaluation was stopped on purpose by Trainer.abort() (not a failure of the site)."""


# --- chain (exit 6) -----------------------------------------------------------------------------
class LedgerError(SwarmError):
    """Anything that went wrong talking to the chain."""

    exit_code = 6


class ChainUnavailable(LedgerError):
    """The JSON-RPC endpoint cannot be reached, even after retries."""


class ContractRevert(LedgerError):
    """A contract call reverted. `error_name` is the Solidity custom error's name without its contract
    prefix (`NotLeader` for `SwarmLedgerNotLeader`), `error_args` its arguments."""

    def __init__(self, error_name: str, args: tuple[object, ...] = (), *, hint: str | None = None) -> None:
        self.error_name = error_name
        self.error_args = args
        rendered = ", ".join(repr(a) for a in args)
        super().__init__(f"contract reverted with {error_name}({rendered})", hint=hint)


class DevnetError(LedgerError):
    """The local anvil devnet could not be started, found or stopped."""


# --- wire and peers (exit 7) --------------------------------------------------------------------
class WireError(SwarmError):
    """A message from a peer is malformed, oversized, of an unknown kind or version."""

    exit_code = 7


class CodecError(WireError):
    """Tensor bytes disagree with their manifest, or a dtype is unsupported."""


class HashMismatch(WireError):
    """Received bytes do not hash to the value committed on chain."""


class TransportError(SwarmError):
    """A socket could not be bound or connected, or a transfer failed or timed out."""

    exit_code = 7


class StreamFailed(TransportError):
    """A stream the peer had begun ended before its last byte: one side stopped granting credit in time
    (a loaded box), or the peer stopped it. The peer was there, so another try may succeed."""


class PeerRejected(TransportError):
    """A peer was refused: not an active member, or over a limit. `reason`: the refusal's word from the
    peer's answer (`transport.Refusal`), when it gave one."""

    def __init__(self, message: str, *, hint: str | None = None, reason: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.reason = reason


class RelayFailed(PeerRejected):
    """A model served while it was still arriving at the serving peer stopped: that peer's own
    download failed. Another holder may serve it."""


# --- merge (exit 8) -----------------------------------------------------------------------------
class MergeError(SwarmError):
    """No valid update to merge, or a merge rule failed."""

    exit_code = 8


class UpdateRejected(MergeError):
    """An update failed validation (names, shapes, dtypes, non-finite values, norm bound)."""


class InvalidUpdate(UpdateRejected):
    """An update failed one named check. `reason` is a short stable label (e.g. "shape", "norm")
    for metrics and the ledger's excluded list; `sender` names the site when known."""

    def __init__(self, reason: str, message: str, *, sender: str = "", hint: str | None = None) -> None:
        self.reason = reason
        self.sender = sender
        super().__init__(f"update from {sender}: {message}" if sender else message, hint=hint)


# --- daemon (exit 9) ----------------------------------------------------------------------------
class DaemonError(SwarmError):
    """The daemon cannot start, or its control socket cannot be reached."""

    exit_code = 9


def exit_code(err: BaseException) -> int:
    """Exit status the CLI uses for an error: the family's code, 1 for anything unexpected."""
    return err.exit_code if isinstance(err, SwarmError) else 1
