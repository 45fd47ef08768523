"""The C allocator of a geodino process: fewer malloc arenas, and freed memory handed back to the system.

No torch here (the CLI calls :func:`limit_malloc_arenas` before anything heavy is imported).
"""

from __future__ import annotations

import ctypes
import ctypes.util

#: glibc's mallopt parameter for the number of malloc arenas.
M_ARENA_MAX = -8


def limit_malloc_arenas(n: int = 2) -> bool:
    """Keep glibc to ``n`` malloc arenas in this process (call before threads start). The reader, compression and
    torch threads each get an arena by default, and freed row blocks linger in them: peak memory then grows with
    the scene's width (measured: tiny model 8192 vs 2048 px, 1.24-1.30 -> 1.18). No-op (False) without glibc."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return bool(libc is not None and libc.mallopt(M_ARENA_MAX, n))
    except (OSError, AttributeError):
        return False


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


_LIBC = _libc()


def trim_free_memory() -> None:
    """Hand memory freed since the last call back to the system (glibc's ``malloc_trim``; no-op without glibc): row
    blocks of a long run would otherwise stay resident in the allocator's free lists."""
    if _LIBC is not None and hasattr(_LIBC, "malloc_trim"):
        _LIBC.malloc_trim(0)
