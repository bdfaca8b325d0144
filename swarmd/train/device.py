"""Where training runs: device choice and the CPU thread budget."""

from __future__ import annotations

import os

import torch

from swarmd.errors import ConfigError

DEVICE_PREFS = ("auto", "cpu", "cuda")


def choose_device(pref: str = "auto") -> torch.device:
    """`auto`: the first CUDA device when there is one, else the CPU. `cuda[:N]` must exist."""
    pref = (pref or "auto").strip().lower()
    if pref == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if pref == "cpu":
        return torch.device("cpu")
    if pref == "cuda" or pref.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {pref!r} requested but CUDA is not available", hint="use auto or cpu")
        index = 0 if pref == "cuda" else _index(pref)
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device {pref!r}: only {torch.cuda.device_count()} CUDA device(s)")
        return torch.device("cuda", index)
    raise ConfigError(f"unknown device {pref!r}", hint="use auto, cpu, cuda or cuda:N")


def _index(pref: str) -> int:
    try:
        return int(pref.split(":", 1)[1])
    except ValueError:
        raise ConfigError(f"bad CUDA device {pref!r}", hint="e.g. cuda:0") from None


def cpu_count() -> int:
    """CPUs this process may use (respects affinity masks and cgroup-pinned cpusets)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def thread_count(threads: int = 0) -> int:
    """Intra-op threads for CPU training: `threads` if > 0, else min(4, CPUs - 1), at least 1.

    Small convolutions stop scaling beyond ~4 threads, and the daemon's event loop and ZeroMQ
    need a core of their own: OpenMP threads that have to share their cores spin and stall (on a
    busy 2-core machine, 2 threads trained DenseNet121 ~10x slower than 1).
    """
    if threads < 0:
        raise ConfigError(f"threads must be >= 0, got {threads}")
    return threads if threads > 0 else max(1, min(4, cpu_count() - 1))


def configure_threads(threads: int = 0) -> int:
    """Set torch's intra-op thread count (process-wide) and return it."""
    n = thread_count(threads)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n
