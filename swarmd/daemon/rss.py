"""`RssPeak`: this process's peak resident memory over a block, sampled in a thread."""

from __future__ import annotations

import threading


class RssPeak:
    """Samples this process's RSS in a thread; `growth` is the peak over the value at entry.

    The leader's memory during an exchange is the figure `swarm bench round` holds against model size."""

    def __init__(self, interval: float = 0.01) -> None:
        import psutil

        self._proc = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self.base = self.peak = 0

    def __enter__(self) -> RssPeak:
        self.base = self.peak = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._sample, name="rss", daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)

    @property
    def growth(self) -> int:
        return self.peak - self.base
