"""The blend on the model's device (a torch Stitcher; the CPU here) against the previous numpy blend, to the last bit."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from geodino.stitch import Stitcher, blend_window
from geodino.tiling import Tile, TilePlan


class NumpyStitcher:
    """The numpy float64 blend geodino used before issue #13 (kept here as the reference): every cell of every
    tile multiplied by its weight and summed in float64, divided by the summed weights, NaN where none."""

    def __init__(self, plan: TilePlan, dim: int, sink: Callable[[int, np.ndarray], None], floor: float, stride: int) -> None:
        self.plan, self.sink, self.scale = plan, sink, plan.patch // stride
        full = (-(-plan.height // stride), -(-plan.width // stride))
        r0, _, c0, c1 = plan.cell_bounds
        self.origin, self.full_rows = (r0 * self.scale, c0 * self.scale), full[0]
        self.cols = min(c1 * self.scale, full[1]) - c0 * self.scale
        self.t = t = plan.tile // stride
        self.window = blend_window(t, floor)
        self.acc = np.zeros((t, self.cols + t, dim))
        self.wsum = np.zeros((t, self.cols + t))
        self.base, self.tile_row = 0, plan.tile_rows.start

    def add(self, tile: Tile, out: np.ndarray, cv: np.ndarray) -> None:
        r = tile.cell_row * self.scale - self.origin[0] - self.base
        c = tile.cell_col * self.scale - self.origin[1]
        t = self.t
        out = np.where(cv[..., None], out, 0.0).astype(np.float32)
        w = self.window * cv
        self.acc[r : r + t, c : c + t] += out * w[:, :, None]
        self.wsum[r : r + t, c : c + t] += w

    def finish_row(self) -> None:
        done = min(self.plan.rows_done_after(self.tile_row) * self.scale, self.full_rows) - self.origin[0]
        n = done - self.base
        if n > 0:
            with np.errstate(invalid="ignore", divide="ignore"):
                block = (self.acc[:n, : self.cols] / self.wsum[:n, : self.cols, None]).astype(np.float32)
            block[self.wsum[:n, : self.cols] == 0] = np.nan
            self.sink(self.origin[0] + self.base, block)
            keep = self.t - n
            self.acc[:keep], self.wsum[:keep] = self.acc[n:].copy(), self.wsum[n:].copy()
            self.acc[keep:], self.wsum[keep:] = 0.0, 0.0
        self.base = done
        self.tile_row += 1


def stitched(make: Callable[..., object], plan: TilePlan, outs: dict[Tile, tuple[object, object]], stride: int, dim: int) -> np.ndarray:
    rows: list[np.ndarray] = []
    st_ = make(plan, dim, lambda r0, b: rows.append(np.array(b)), 0.1, stride)
    for tile in plan.tiles():
        if tile in outs:  # a tile missing from ``outs`` is empty: skipped
            st_.add(tile, *outs[tile])  # type: ignore[attr-defined]
        if tile.col == plan.tile_cols.stop - 1:
            st_.finish_row()  # type: ignore[attr-defined]
    return np.concatenate(rows)


cases = st.tuples(
    st.integers(1, 200), st.integers(1, 200), st.integers(2, 5), st.integers(0, 3), st.sampled_from([16, 4, 1]), st.integers(0, 2**16)
).filter(lambda c: c[3] < c[2])


@settings(max_examples=40, deadline=None)
@given(case=cases)
def test_device_blend_equals_the_numpy_blend_to_the_last_bit(case: tuple[int, int, int, int, int, int]) -> None:
    h, w, t, o, stride, seed = case
    plan = TilePlan(h, w, 16 * t, 16 * o)
    rng = np.random.default_rng(seed)
    n = plan.tile // stride
    outs = {}
    for tile in plan.tiles():
        if rng.random() < 0.1:
            continue  # an empty tile
        out = rng.standard_normal((n, n, 3)).astype(np.float32) * np.float32(rng.choice([1e-3, 1.0, 1e30]))
        out[rng.random((n, n)) < 0.05] = -0.0  # negative zeros: the blend turns them into 0.0, so must the copy
        out[..., 1] = out[..., 0]  # equal values in two channels
        cv = rng.random((n, n)) > 0.15
        out[~cv] = np.nan  # anything may sit in invalid cells
        outs[tile] = (out, cv)
    if not outs:
        return
    want = stitched(NumpyStitcher, plan, outs, stride, 3)
    got = stitched(lambda *a: Stitcher(*a, device="cpu"), plan, {k: (torch.from_numpy(o).permute(2, 0, 1), torch.from_numpy(c))
                                                                   for k, (o, c) in outs.items()}, stride, 3)  # fmt: skip
    assert got.shape == want.shape
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))  # every bit, NaN and signed zeros included


def test_a_sub_plan_blends_like_the_numpy_blend_of_the_same_sub_plan() -> None:
    plan = TilePlan(300, 260, 64, 16).for_cells(5, 14, 3, 12)
    rng = np.random.default_rng(1)
    outs = {tile: (rng.standard_normal((4, 4, 2)).astype(np.float32), np.ones((4, 4), bool)) for tile in plan.tiles()}
    want = stitched(NumpyStitcher, plan, outs, 16, 2)
    got = stitched(Stitcher, plan, outs, 16, 2)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
