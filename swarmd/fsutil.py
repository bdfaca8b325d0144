"""Atomic file writes: tmp file in the same directory, fsync, rename, fsync the directory.

A crash at any point leaves either the old file or the new one, never a half-written file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from swarmd.errors import StoreError


def _fsync(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], mode: int = 0o644) -> Iterator[Path]:
    """Yield a tmp path beside `path`; when the block ends without error, it durably becomes `path`.

    For writers that want a file name rather than bytes (safetensors writes tensors straight
    from their memory, without assembling the file in RAM)."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
    except OSError as exc:
        raise StoreError(f"cannot write {target}: {exc.strerror or exc}") from exc
    try:
        yield Path(tmp)
        _fsync(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, target)
        _fsync(target.parent)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise StoreError(f"cannot write {target}: {exc.strerror or exc}") from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(
    path: str | os.PathLike[str], chunks: bytes | Iterable[bytes | memoryview], mode: int = 0o644
) -> Path:
    """Write `chunks` to `path` atomically and durably; return the final path."""
    with atomic_path(path, mode) as tmp, open(tmp, "wb") as fh:
        for chunk in [chunks] if isinstance(chunks, bytes | bytearray | memoryview) else chunks:
            fh.write(chunk)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str, mode: int = 0o644) -> Path:
    return atomic_write(path, text.encode("utf-8"), mode)
