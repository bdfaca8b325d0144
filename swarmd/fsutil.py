"""Atomic file writes: tmp file in the same directory, fsync, rename, fsync the directory.

A crash at any point leaves either the old file or the new one, never a half-written file; so does a
full disk: the write fails with DiskFullError, the tmp file is removed and the old file stays. Files
that fail their checks are moved aside (`quarantine`) rather than deleted, for the operator to inspect.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from swarmd.errors import StoreError

# No space on the file system, or the user's quota is spent: both heal when space returns.
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


class DiskFullError(StoreError):
    """A write failed for lack of space (ENOSPC, EDQUOT); nothing was changed."""


def store_error(target: Path, exc: OSError) -> StoreError:
    """The named error for an OSError writing `target`: DiskFullError when space ran out."""
    if exc.errno in NO_SPACE:
        return DiskFullError(
            f"cannot write {target}: {exc.strerror or exc}", hint="free space on its file system"
        )
    return StoreError(f"cannot write {target}: {exc.strerror or exc}")


def _fsync(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(
    path: str | os.PathLike[str], mode: int = 0o644, *, named: Callable[[], Path] | None = None
) -> Iterator[Path]:
    """Yield a tmp path beside `path`; when the block ends without error, it durably becomes `path`.

    For writers that want a file name rather than bytes (safetensors writes tensors straight
    from their memory, without assembling the file in RAM). Whatever the block raises, the tmp
    file is removed and `path` is left as it was. `named`: the final path (in the same folder), asked
    for once the file is written and synced, for a file named by what it holds (a content hash computed
    meanwhile); what it raises is raised, and nothing is left."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
    except OSError as exc:
        raise store_error(target, exc) from exc
    try:
        yield Path(tmp)
        _fsync(tmp)
        os.chmod(tmp, mode)
        if named is not None:
            target = named()
        os.replace(tmp, target)
        _fsync(target.parent)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise store_error(target, exc) from exc
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


def quarantine(path: Path, into: Path) -> Path:
    """Move `path` into the folder `into`, its name suffixed with the time; return the new path.

    A rename on the same file system: it needs no space, so it works on a full disk too."""
    into.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    dest = into / f"{path.name}.{stamp}"
    n = 1
    while dest.exists():
        n += 1
        dest = into / f"{path.name}.{stamp}.{n}"
    try:
        os.replace(path, dest)
    except OSError as exc:
        raise StoreError(f"cannot move {path} aside into {into}: {exc.strerror or exc}") from exc
    return dest
