"""Long steps announced through :mod:`logging`: what the library is doing now, for whoever shows progress.

A step that can take more than a few seconds without a tile or epoch count (the statistics read, loading
weights, writing a COG) runs inside :func:`step`: an INFO record names it when it starts and a DEBUG record gives
its seconds when it ends. Both carry ``record.geodino_step`` (``"start"``/``"end"``) and ``record.step_id``, so a
front end tells them from other records: the command line (:mod:`geodino.cli.app`) prints a step that has run for a
few seconds, then one line every few seconds. The library only logs; it never configures logging.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from collections.abc import Iterator

#: ``record.geodino_step``: the record starts or ends a step.
START, END = "start", "end"
_ids = itertools.count(1)


@contextlib.contextmanager
def step(log: logging.Logger, message: str, *args: object) -> Iterator[None]:
    """Log ``message % args`` at INFO when the block starts and ``message: N.N s`` at DEBUG when it ends
    (``stopped after`` when it raised)."""
    sid, t0 = next(_ids), time.perf_counter()
    log.info(message, *args, extra={"geodino_step": START, "step_id": sid})
    ended = "stopped after"
    try:
        yield
        ended = "done in"
    finally:
        log.debug(message + f": {ended} %.1f s", *args, time.perf_counter() - t0, extra={"geodino_step": END, "step_id": sid})
