"""Rows arriving in order, gathered into blocks of a fixed height, and a bounded pool that works on the blocks.

The one staging of the streamed outputs: :class:`~geodino.cogstream.CogStream` (a block row of tiles per
pyramid level), :class:`~geodino.streams.ZarrFeatureStream` and :class:`~geodino.runstore.BlockRows` (chunk
rows of a Zarr store) each gather rows with :class:`RowBlocks` and hand full blocks to a :class:`TaskPool`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt

#: ``on_block(start, block)``: ``block`` ``(D, n, W)`` holds rows ``[start, start + n)`` (counted since the last reset).
OnBlock = Callable[[int, np.ndarray], None]


class RowBlocks:
    """Rows ``(D, r, W)`` added in order are copied into blocks of ``rows`` rows (of ``dtype``); each full block goes
    to ``on_block`` (which owns it from then on), the partial last one on :meth:`flush`."""

    def __init__(self, rows: int, on_block: OnBlock, dtype: npt.DTypeLike = np.float32) -> None:
        self.rows, self.on_block, self.dtype = rows, on_block, np.dtype(dtype)
        self._staged: np.ndarray | None = None
        self._filled = 0
        self._start = 0  # row of the staged block's first row

    def add(self, data: np.ndarray) -> None:
        """The next rows, ``data`` ``(D, r, W)`` (any strides: read only during the call)."""
        d, r, w = data.shape
        done = 0
        while done < r:
            if self._staged is None:
                self._staged, self._filled = np.empty((d, self.rows, w), self.dtype), 0  # only filled rows are used
            k = min(r - done, self.rows - self._filled)
            self._staged[:, self._filled : self._filled + k] = data[:, done : done + k]
            self._filled += k
            done += k
            if self._filled == self.rows:
                self.flush()

    def flush(self) -> None:
        """Hand over the staged rows, if any, as a (possibly partial) block."""
        staged, n, start = self._staged, self._filled, self._start
        self._staged, self._filled = None, 0
        if staged is not None and n:
            self._start = start + n
            self.on_block(start, staged[:, :n])


class TaskPool:
    """``workers`` threads (0: run each task at once in the caller) with at most ``limit`` tasks queued or running:
    :meth:`submit` waits for a free slot (back-pressure, so memory stays flat). A task's error is raised by the next
    :meth:`submit` or by :meth:`close`."""

    def __init__(self, workers: int, limit: int, name: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name) if workers > 0 else None
        self._slots = threading.BoundedSemaphore(max(1, limit))
        self._futures: list[Future[None]] = []

    def submit(self, fn: Callable[..., None], *args: Any) -> None:
        self.check()
        if self._pool is None:
            fn(*args)
            return
        self._slots.acquire()

        def run() -> None:
            try:
                fn(*args)
            finally:
                self._slots.release()

        self._futures.append(self._pool.submit(run))

    def check(self) -> None:
        """Raise the error of a finished task, if one failed; forget the finished ones."""
        done = [f for f in self._futures if f.done()]
        self._futures = [f for f in self._futures if not f.done()]
        for f in done:
            f.result()

    def close(self) -> None:
        """Wait for every task; raise the first error."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self.check()

    def abort(self) -> None:
        """Drop the queued tasks and wait for the running ones (their errors are not raised)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._futures = []
