"""A .npy header is parsed one thread at a time: numpy parses it with ast.literal_eval, and CPython 3.11's
AST construction can fail under concurrent threads ("AST constructor recursion depth mismatch", seen once
in a suite run while the data check's pool read 256-sample signals). Many files checked in a pool all pass,
and every parse holds the lock."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from swarmd.errors import DataError
from swarmd.train import headers


class _Counting:
    """A lock that counts how often it was held and checks no two threads hold it at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.entries = 0
        self.inside = 0

    def __enter__(self) -> None:
        self._lock.acquire()
        self.inside += 1
        assert self.inside == 1
        self.entries += 1

    def __exit__(self, *exc: object) -> None:
        self.inside -= 1
        self._lock.release()


def test_headers_checked_in_a_pool_are_parsed_one_at_a_time(tmp_path: Path, monkeypatch):
    lock = _Counting()
    monkeypatch.setattr(headers, "_AST_LOCK", lock)
    files = []
    for i in range(64):
        path = tmp_path / f"s{i}.npy"
        np.save(path, np.zeros(256, dtype=np.float32))
        files.append(path)
    with ThreadPoolExecutor(max_workers=8) as pool:
        infos = list(pool.map(headers.inspect_file, files))
    assert lock.entries == len(files) and all(i is None for i in infos)


def test_a_truncated_npy_is_still_a_named_error(tmp_path: Path):
    path = tmp_path / "short.npy"
    np.save(path, np.zeros(256, dtype=np.float32))
    path.write_bytes(path.read_bytes()[:-8])
    with pytest.raises(DataError):
        headers.inspect_file(path)
