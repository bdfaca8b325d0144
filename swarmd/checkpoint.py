"""Content-addressed model checkpoints: safetensors files named by the model's content hash.

A checkpoint's file name is `hash_hex(content_hash(state)) + ".safetensors"`, the same hash that
names the model on chain, so a file can be checked against the ledger without trusting its name.
Files are written atomically (tmp, fsync, rename) and read only through safetensors: nothing is
ever unpickled and `torch.load` is never called. Every load recomputes the content hash, except
`open` of a file the store wrote itself and that is still the same file; a corrupt, truncated or
mismatching file raises CorruptCheckpointError, and the store moves it aside into `quarantine/` so
that the next look finds no file and the model is fetched again.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import safetensors
import safetensors.torch
import torch

from swarmd.checkpoint_reader import CorruptStoredState, FileId, StoredState, open_verified
from swarmd.codec import HASH_SIZE, content_hash, hash_against, hash_hex
from swarmd.errors import CheckpointError, CodecError, StoreError
from swarmd.fsutil import DiskFullError, atomic_path, quarantine

log = logging.getLogger("swarmd.checkpoint")

SUFFIX = ".safetensors"
_METADATA = {"format": "pt", "producer": "swarmd"}
QUARANTINE = "quarantine"
# safetensors reports the OS error of a failed write only in its message.
_NO_SPACE_MESSAGES = ("os error 28)", "os error 122)")  # ENOSPC, EDQUOT
_WRITTEN_KEPT = 1024  # files this store remembers writing; one forgotten is hashed again when opened
PENDING = "pending" + SUFFIX  # where a file being written while its hash is computed gets its tmp name
# Hashes a model while the store writes it (`_put_hashing`): the content hash releases the GIL.
_HASHING = ThreadPoolExecutor(max_workers=2, thread_name_prefix="swarmd-store-hash")


class CorruptCheckpointError(CheckpointError):
    """A checkpoint file is unreadable, truncated, or holds other bytes than its name says."""


def _plain(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous, detached tensors: what safetensors needs. Copies only what is not already so."""
    out: dict[str, torch.Tensor] = {}
    for name, t in state.items():
        if not isinstance(t, torch.Tensor):
            raise CheckpointError(f"state entry {name!r} is a {type(t).__name__}, not a tensor")
        out[name] = t.detach().to("cpu").contiguous()
    return out


def _specs(plain: Mapping[str, torch.Tensor]) -> dict[str, safetensors.TensorSpec]:
    """safetensors' description of each tensor, pointing at the tensor's own memory.

    `safetensors.torch.save_file` builds the same specs through numpy and ctypes, which takes 27 ms for
    DenseNet121's 727 tensors here (1 ms this way) and is most of its cost; the file is byte for byte the
    same. Two entries over one memory are refused, as safetensors.torch refuses them."""
    if sys.byteorder != "little":  # safetensors stores little-endian; its torch layer swaps, this cannot
        raise CheckpointError("checkpoints are written on little-endian machines only")
    owner: dict[int, str] = {}
    specs = {}
    for name, t in plain.items():
        if t.numel():
            first = owner.setdefault(t.data_ptr(), name)
            if first != name:
                raise CheckpointError(f"cannot serialize state dict: {first!r} and {name!r} share memory")
        specs[name] = safetensors.TensorSpec(
            dtype=str(t.dtype).removeprefix("torch."),
            shape=t.shape,
            data_ptr=t.data_ptr(),
            data_len=t.numel() * t.element_size(),
        )
    return specs


def save_file(
    state: Mapping[str, torch.Tensor], path: Path, *, named: Callable[[], Path] | None = None
) -> Path:
    """Write `state` as a safetensors file at `path` (or where `named()` says once it is written, see
    `atomic_path`), atomically. For exports; the store uses put().

    safetensors writes each tensor from its own memory, so saving adds no model-sized copy:
    a leader persisting an update it just received stays within its memory bound."""
    plain = _plain(state)  # holds every tensor the specs point into until the file is written
    try:
        specs = _specs(plain)
        with atomic_path(path, named=named) as tmp:
            safetensors.serialize_file(specs, tmp, metadata=_METADATA)
    except DiskFullError:
        raise
    except StoreError as exc:
        raise CheckpointError(str(exc)) from exc
    except (safetensors.SafetensorError, ValueError, RuntimeError) as exc:
        if any(m in str(exc) for m in _NO_SPACE_MESSAGES):
            raise DiskFullError(
                f"cannot write {path}: no space left", hint="free space on its file system"
            ) from exc
        # e.g. two entries sharing storage, which safetensors refuses on purpose
        raise CheckpointError(f"cannot serialize state dict: {exc}") from exc
    return Path(path)


def _deserialize(data: bytes, path: Path) -> dict[str, torch.Tensor]:
    try:
        return safetensors.torch.load(data)
    except (safetensors.SafetensorError, ValueError, RuntimeError) as exc:
        raise CorruptCheckpointError(f"checkpoint {path} is corrupt or truncated: {exc}") from exc


def load_file(path: Path, expected: bytes | None = None) -> dict[str, torch.Tensor]:
    """Read a safetensors file; if `expected` is given, its content hash must match it."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from exc
    state = _deserialize(data, path)
    if expected is not None:
        try:
            got = hash_against(state, expected)
        except CodecError as exc:
            raise CorruptCheckpointError(f"checkpoint {path} holds an unsupported tensor: {exc}") from exc
        if got != expected:
            raise CorruptCheckpointError(
                f"checkpoint {path} does not match its hash: "
                f"expected {hash_hex(expected)}, got {hash_hex(got)}",
                hint="the file was modified or corrupted; fetch the model again from a peer",
            )
    return state


def _check_hash(h: bytes) -> bytes:
    if not isinstance(h, bytes | bytearray) or len(h) != HASH_SIZE:
        raise CheckpointError(f"a checkpoint hash is {HASH_SIZE} bytes, got {h!r:.80}")
    return bytes(h)


class CheckpointStore:
    """A directory of checkpoints named by content hash. Safe to share between threads."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._written: OrderedDict[bytes, FileId] = OrderedDict()
        self._written_lock = threading.Lock()

    def path(self, h: bytes) -> Path:
        return self.root / (hash_hex(_check_hash(h)) + SUFFIX)

    def has(self, h: bytes) -> bool:
        return self.path(h).is_file()

    def put(self, state: Mapping[str, torch.Tensor], h: bytes | None = None) -> bytes:
        """Store `state` (idempotent) and return its content hash.

        `h` skips hashing when the caller already computed the content hash over these very
        bytes (the transport hashes as it receives); it is never a hash taken from a peer."""
        if h is None:
            return self._put_hashing(state)
        target = self.path(_check_hash(h))
        if not target.is_file():
            # A file of this name can only hold these bytes, so a concurrent writer is harmless.
            save_file(state, target)
            self._wrote(h, target)
        return h

    def _put_hashing(self, state: Mapping[str, torch.Tensor]) -> bytes:
        """Write `state` while a second thread hashes it, and name the file by the hash once both are
        done: a model takes about as long to hash as to write and sync (25 ms each for 28 MB here), and
        a round waits for both, at the leader's merge and before a committer's commit. A model already
        stored is written again (its name is known only at the end): the same bytes under the same name."""
        hashing = _HASHING.submit(content_hash, state)

        def named() -> Path:
            try:
                return self.path(hashing.result())
            except CodecError as exc:
                raise CheckpointError(f"cannot checkpoint this state dict: {exc}") from exc

        try:
            save_file(state, self.root / PENDING, named=named)
        finally:
            hashing.cancel()  # when the write failed before the hash began
        h = hashing.result()
        self._wrote(h, self.path(h))
        return h

    def _wrote(self, h: bytes, target: Path) -> None:
        try:
            written = FileId.of(target.stat())
        except OSError:
            return  # gone already (pruned): nothing to remember
        with self._written_lock:
            self._written[h] = written
            self._written.move_to_end(h)
            while len(self._written) > _WRITTEN_KEPT:
                self._written.popitem(last=False)

    def get(self, h: bytes) -> dict[str, torch.Tensor]:
        """Load and verify the checkpoint named by `h`.

        A file that fails its check is moved into `quarantine/` before CorruptCheckpointError is
        raised: the next `has(h)` is False, so the caller fetches the model again instead of
        reading the same bad file every round."""
        target = self.path(h)
        if not target.is_file():
            raise CheckpointError(f"no checkpoint {hash_hex(h)} in {self.root}")
        try:
            return load_file(target, expected=_check_hash(h))
        except CorruptCheckpointError as exc:
            raise self._set_aside(target, exc) from None

    def open(self, h: bytes) -> StoredState:
        """The checkpoint named by `h`, verified, its tensors read one at a time on access (see
        `checkpoint_reader`); a bad file is moved aside as in get(). The file this store wrote for `h`
        (`put`), while the path still holds it, is not hashed again: its state's hash was `h`."""
        target = self.path(h)
        if not target.is_file():
            raise CheckpointError(f"no checkpoint {hash_hex(h)} in {self.root}")
        with self._written_lock:
            written = self._written.get(h)
        try:
            return open_verified(target, _check_hash(h), written)
        except CorruptStoredState as exc:
            raise self._set_aside(target, exc) from None

    def _set_aside(self, target: Path, exc: CheckpointError) -> CorruptCheckpointError:
        try:
            where = f"moved it aside to {self.quarantine(target)}"
        except StoreError as moving:
            # The next look must not find it again, or the caller would read it again forever.
            with contextlib.suppress(OSError):
                target.unlink(missing_ok=True)
            where = f"{moving}; deleted it"
        log.error("%s; %s", exc.args[0], where)
        return CorruptCheckpointError(f"{exc.args[0]}; {where}", hint="fetch the model again from a peer")

    def quarantine(self, target: Path) -> Path:
        """Move a bad file out of the store, into `quarantine/` under the store, for inspection."""
        return quarantine(target, self.root / QUARANTINE)

    def hashes(self) -> list[bytes]:
        """Hashes of every stored checkpoint (by file name; not verified)."""
        if not self.root.is_dir():
            return []
        out = []
        for f in sorted(self.root.glob("0x*" + SUFFIX)):
            body = f.name[2 : -len(SUFFIX)]
            if len(body) == 2 * HASH_SIZE:
                try:
                    out.append(bytes.fromhex(body))
                except ValueError:
                    continue  # not one of ours
        return out
