"""The outputs of the tiles on a column strip's right edge, kept on disk for the next strip.

A wide scene runs in column strips (:func:`~geodino.engine.stitch_strips`), each the sub-job of the tiles
touching it. The tiles that straddle a strip's right edge belong to the next strip too; running them again
would cost the model a tile column per strip, holding their outputs in memory would grow with the scene's
height. So :class:`TileSpill` writes each of them once to an unnamed temporary file (gone when closed, or
when the process dies) and the next strip reads it back, in a reader thread, instead of reading and
running the tile: every tile runs once, and memory stays flat.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from geodino.tiling import Tile


@dataclass(frozen=True)
class Kept:
    """A tile's model output kept from the previous strip: ``out`` ``(C, t, t)`` float32, ``cells`` ``(t, t)`` bool;
    both None for a tile with no valid pixel (skipped, and counted as skipped, by the previous strip)."""

    tile: Tile
    out: torch.Tensor | None = None
    cells: torch.Tensor | None = None


class TileSpill:
    """Tile outputs ``(C, t, t)`` float32 and cell validity ``(t, t)`` of the tiles reaching past a strip's right
    edge, written in one strip (:meth:`save`) and read in the next (:meth:`load`: thread-safe). Two unnamed files
    take turns (the strip being run writes one while it reads the other); ``folder``: where they live (the
    output's folder: room for a tile column of the scene)."""

    def __init__(self, channels: int, cells: int, folder: str | Path | None = None) -> None:
        self.channels, self.cells = channels, cells
        self._out_bytes = channels * cells * cells * 4
        self._files = [tempfile.TemporaryFile(dir=folder) for _ in range(2)]  # noqa: SIM115 (closed by close())
        self._index: list[dict[Tile, int]] = [{}, {}]
        self._turn = 0
        self._edge: int | None = None  # the running strip's right edge (grid column); None: nothing to keep

    def strip(self, right: int | None) -> None:
        """Start the next strip, whose tiles reaching past grid column ``right`` are kept (None: the last strip)."""
        self._turn ^= 1
        self._index[self._turn] = {}
        self._files[self._turn].truncate(0)
        self._edge = right

    def wants(self, tile: Tile) -> bool:
        """Whether ``tile`` reaches past the running strip's right edge (the next strip needs it)."""
        return self._edge is not None and tile.cell_col + tile.cells > self._edge

    def save(self, tile: Tile, out: torch.Tensor | None, cells: torch.Tensor | None) -> None:
        """Keep ``tile``'s output for the next strip (None, None: the tile is empty)."""
        index, f = self._index[self._turn], self._files[self._turn]
        if out is None or cells is None:
            index[tile] = -1
            return
        offset = sum(o >= 0 for o in index.values()) * (self._out_bytes + self.cells * self.cells)
        os.pwrite(f.fileno(), np.ascontiguousarray(out.detach().cpu().numpy(), np.float32).data, offset)
        os.pwrite(f.fileno(), np.ascontiguousarray(cells.cpu().numpy(), bool).data, offset + self._out_bytes)
        index[tile] = offset

    def load(self, tile: Tile) -> Kept | None:
        """``tile``'s output kept by the previous strip (on the CPU), or None."""
        offset = self._index[self._turn ^ 1].get(tile)
        if offset is None:
            return None
        if offset < 0:
            return Kept(tile)
        n = self.cells
        buf = bytearray(self._out_bytes + n * n)
        if os.preadv(self._files[self._turn ^ 1].fileno(), [buf], offset) != len(buf):
            raise OSError(f"the kept output of tile {tile.row},{tile.col} was cut short")
        out = np.frombuffer(buf, np.float32, count=self._out_bytes // 4).reshape(self.channels, n, n)
        cells = np.frombuffer(buf, bool, offset=self._out_bytes).reshape(n, n)
        return Kept(tile, torch.from_numpy(out), torch.from_numpy(cells))

    def close(self) -> None:
        for f in self._files:
            f.close()

    def __enter__(self) -> TileSpill:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
