"""TIFF tile encoding with torch: predictor (any device), ZSTD level 1, block rows -> compressed tiles.

A block row ``(count, bh, width)`` is padded to whole ``block x block`` tiles (floats with NaN, uint8 with
255), predicted as libtiff does for PlanarConfiguration=2 (floats: Predictor=3, TIFF Tech Note 3;
uint8: Predictor=2) and compressed with ZSTD level 1, giving the payloads that
:class:`geodino.cogfile.CogFile` writes. The prediction is torch ops only (it runs where the block is,
a GPU included); the compression runs on the CPU and releases the GIL, so band ranges
(:func:`compress_tiles`) can go to a thread pool.
"""

from __future__ import annotations

import threading
from concurrent.futures import Executor

import numpy as np
import torch
import zstandard

#: (band, tx, compressed payload) of one tile of a block row.
Tile = tuple[int, int, bytes]

_LOCAL = threading.local()  # one zstd context per thread (a context is not thread-safe; reusing one is cheap)
_FLOATS = (torch.float32, torch.float16)


def predict(tiles: torch.Tensor) -> torch.Tensor:
    """TIFF predictor of ``tiles (N, h, w)``: float32/float16 -> floating-point predictor (3) as uint8
    ``(N, h, w * itemsize)``; uint8 -> horizontal differencing (2) as uint8 ``(N, h, w)``. Torch ops only."""
    if tiles.dim() != 3:
        raise ValueError(f"tiles must be (N, h, w), got shape {tuple(tiles.shape)}")
    return _predict_rows(tiles)


def _predict_rows(x: torch.Tensor) -> torch.Tensor:
    """:func:`predict` of every row of ``x (..., w)`` (any strides) -> contiguous uint8 ``(..., w * itemsize)``."""
    if x.dtype in _FLOATS:
        if x.stride(-1) != 1:
            x = x.contiguous()
        u = x.view(torch.uint8).unflatten(-1, (x.shape[-1], x.element_size()))
        # little-endian in memory: the most significant byte plane first, the least significant last
        b = torch.stack([u[..., k] for k in reversed(range(x.element_size()))], dim=-2).flatten(-2)
    elif x.dtype == torch.uint8:
        b = x
    else:
        raise TypeError(f"predict: unsupported dtype {x.dtype} (float32, float16 or uint8)")
    out = torch.empty(b.shape, dtype=torch.uint8, device=b.device)
    out[..., 0] = b[..., 0]
    torch.sub(b[..., 1:], b[..., :-1], out=out[..., 1:])  # uint8 arithmetic wraps around
    return out


def predict_rows(x: np.ndarray) -> np.ndarray:
    """:func:`predict` of every row of ``x (..., w)`` in numpy (the last axis contiguous): what the compression
    threads run (numpy is single-threaded there, where torch's intra-op threads would compete with the pool)."""
    if x.dtype == np.uint8:
        b = x
    elif x.dtype in (np.float32, np.float16):
        if x.strides[-1] != x.itemsize:
            x = np.ascontiguousarray(x)
        n = x.itemsize
        u = x.view(np.uint8).reshape(*x.shape, n)[..., ::-1]  # most significant byte first (little-endian memory)
        b = np.ascontiguousarray(np.moveaxis(u, -1, -2)).reshape(*x.shape[:-1], x.shape[-1] * n)
    else:
        raise TypeError(f"predict: unsupported dtype {x.dtype} (float32, float16 or uint8)")
    out = np.empty(b.shape, np.uint8)
    out[..., 0] = b[..., 0]
    np.subtract(b[..., 1:], b[..., :-1], out=out[..., 1:])  # uint8 arithmetic wraps around
    return out


def unpredict(pred: np.ndarray, dtype: np.dtype | str) -> np.ndarray:
    """Inverse of :func:`predict`: uint8 ``(N, h, w * itemsize)`` -> ``dtype`` ``(N, h, w)``."""
    dt = np.dtype(dtype)
    b = np.cumsum(np.asarray(pred, dtype=np.uint8), axis=-1, dtype=np.uint8)
    if dt == np.uint8:
        return b
    n, h, row = b.shape
    bps = dt.itemsize
    planes = b.reshape(n, h, bps, row // bps)[:, :, ::-1]  # least significant plane first
    return np.ascontiguousarray(planes.transpose(0, 1, 3, 2)).view(dt.newbyteorder("<")).reshape(n, h, row // bps).astype(dt)


def compress(buf: bytes | bytearray | memoryview | np.ndarray) -> bytes:
    """ZSTD level 1 frame of ``buf`` (python-zstandard with this thread's reused context: 1.5x numcodecs' speed on
    32 KB tiles, where a fresh context per call dominated; releases the GIL)."""
    c = getattr(_LOCAL, "zstd", None)
    if c is None:
        c = _LOCAL.zstd = zstandard.ZstdCompressor(level=1)
    return c.compress(np.ascontiguousarray(buf).data if isinstance(buf, np.ndarray) else buf)  # .data: a memoryview


def compress_bound(nbytes: int) -> int:
    """ZSTD_COMPRESSBOUND(nbytes): the largest frame :func:`compress` can return for ``nbytes`` of input."""
    small = (128 * 1024 - nbytes) >> 11 if nbytes < 128 * 1024 else 0
    return nbytes + (nbytes >> 8) + small


def pad_value(dtype: torch.dtype) -> float:
    """Fill of the padding outside the raster: NaN for floats, 255 for uint8."""
    return 255.0 if dtype == torch.uint8 else float("nan")


def predicted_tiles(block: torch.Tensor | np.ndarray, block_size: int = 128, block_rows: int | None = None) -> torch.Tensor | np.ndarray:
    """A block row ``(count, bh, width)`` (bh <= ``block_rows``, default ``block_size``) padded to whole tiles of
    ``block_rows x block_size``, cut and predicted: uint8 ``(count, ntx, block_rows, block_size * itemsize)``, a
    tensor on the block's device for a tensor, an array (numpy, single-threaded) for an array."""
    rows = block_rows or block_size
    if block.ndim != 3:
        raise ValueError(f"block row must be (count, rows, width), got shape {tuple(block.shape)}")
    count, bh, width = block.shape
    if bh > rows or bh < 1 or width < 1:
        raise ValueError(f"block row of {bh} rows x {width} columns does not fit {rows}-row tiles")
    ntx = -(-width // block_size)
    if isinstance(block, np.ndarray):
        a = block
        if bh != rows or width != ntx * block_size:
            a = np.full((count, rows, ntx * block_size), 255 if a.dtype == np.uint8 else np.nan, a.dtype)
            a[:, :bh, :width] = block
        return predict_rows(a.reshape(count, rows, ntx, block_size).transpose(0, 2, 1, 3))
    t = block
    if bh != rows or width != ntx * block_size:
        full = torch.full((count, rows, ntx * block_size), pad_value(t.dtype), dtype=t.dtype, device=t.device)
        full[:, :bh, :width] = t
        t = full
    return _predict_rows(t.unflatten(-1, (ntx, block_size)).transpose(1, 2))  # tiles as a view, one copy


def compress_tiles(pred: np.ndarray, b0: int = 0, b1: int | None = None) -> list[Tile]:
    """Compress bands ``b0:b1`` of predicted tiles ``pred (count, ntx, block, row_bytes)`` (numpy, CPU)
    -> ``[(band, tx, payload)]`` (band 0-based)."""
    b1 = pred.shape[0] if b1 is None else b1
    return [(b, tx, compress(pred[b, tx])) for b in range(b0, b1) for tx in range(pred.shape[1])]


def encode_block_row(
    block: torch.Tensor | np.ndarray, block_size: int = 128, bands_per_task: int = 32, executor: Executor | None = None
) -> list[Tile]:
    """Compressed tiles of one block row ``(count, bh, width)``: ``[(band, tx, payload)]`` in band, tx order.
    With ``executor``, bands go to it in ranges of ``bands_per_task`` (ZSTD releases the GIL)."""
    got = predicted_tiles(block, block_size)
    pred = got.cpu().numpy() if isinstance(got, torch.Tensor) else got
    count = pred.shape[0]
    ranges = [(b0, min(b0 + bands_per_task, count)) for b0 in range(0, count, max(1, bands_per_task))]
    if executor is None or len(ranges) == 1:
        return compress_tiles(pred)
    futures = [executor.submit(compress_tiles, pred, b0, b1) for b0, b1 in ranges]
    return [tile for f in futures for tile in f.result()]
