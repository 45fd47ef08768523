"""The channel adapter: scene bands -> the model's input bands, DN -> reflectance -> [0, 1].

A :class:`BandAdapter` is a value built once per scene (:func:`make_adapter`) from a sensor preset,
an optional ``--bands`` override and, for percentile stretches, one decimated read of the whole
scene. The same parameters apply to every tile, so there are no seams from per-tile stretching, and
they are recorded in every output. The weights' mean/std are applied afterwards by the spec.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import RasterioIOError
from rasterio.windows import Window

from geodino.errors import InputError
from geodino.scene import Scene, canonical_band
from geodino.sensors import SensorPreset, get_preset, guess_preset, load_presets

#: Longest side of the decimated read used for scene-wide statistics (overviews are used when present).
STATS_SIDE = 1024


@dataclass(frozen=True)
class BandAdapter:
    """Scene-fixed preprocessing: ``x = clip((DN * scale + offset - lo) / (hi - lo), 0, 1)`` per band.

    ``indexes`` are 0-based scene band indexes feeding the model's bands in order; ``lo``/``hi`` are
    per selected band, in scaled units.
    """

    preset: str
    indexes: tuple[int, ...]
    names: tuple[str, ...]
    scale: float
    offset: float
    lo: tuple[float, ...]
    hi: tuple[float, ...]
    nodata: float | None
    stretch: str  # how lo/hi were obtained
    nonfinite_sampled: int = 0  # pixels of the decimated read with NaN/inf in a selected band (float scenes)
    sampled: int = 0  # pixels in the decimated read (0: none was made)

    def to_unit(self, raw: np.ndarray) -> np.ndarray:
        """``(C, H, W)`` DNs of the selected bands -> float32 in [0, 1]."""
        x = raw.astype(np.float32, copy=False) * np.float32(self.scale) + np.float32(self.offset)
        lo = np.asarray(self.lo, np.float32)[:, None, None]
        span = np.maximum(np.asarray(self.hi, np.float32)[:, None, None] - lo, np.float32(1e-12))
        return np.clip((x - lo) / span, 0.0, 1.0)

    def valid(self, raw: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """``(H, W)`` bool: pixels finite in every selected band, not nodata in all of them, and not masked."""
        ok = np.ones(raw.shape[1:], bool)
        if np.issubdtype(raw.dtype, np.floating):
            ok &= np.isfinite(raw).all(axis=0)
        if self.nodata is not None and not np.isnan(self.nodata):
            ok &= ~(raw == np.asarray(self.nodata, raw.dtype)).all(axis=0)
        if mask is not None:
            ok &= mask
        return ok

    def record(self) -> dict[str, object]:
        """Everything needed to reproduce the preprocessing (written to output tags)."""
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.record(), separators=(",", ":"))


def _decimated(scene: Scene, indexes: tuple[int, ...], side: int = STATS_SIDE) -> tuple[np.ndarray, np.ndarray | None]:
    """``(C, h, w)`` nearest-neighbour decimated read of the selected bands (overviews used when present)."""
    h, w = scene.shape
    f = max(1.0, max(h, w) / side)
    out_h, out_w = max(1, round(h / f)), max(1, round(w / f))
    window = Window(scene.offset[1], scene.offset[0], w, h)
    bands, mask = [], None
    for i in indexes:
        path, b = scene.band_sources[i]
        try:
            with rasterio.open(path) as ds:
                bands.append(ds.read(b, window=window, out_shape=(out_h, out_w), resampling=Resampling.nearest))
                if scene.has_mask and mask is None:
                    mask = ds.dataset_mask(window=window, out_shape=(out_h, out_w), resampling=Resampling.nearest) > 0
        except RasterioIOError as exc:
            detail = str(exc.__cause__ or exc).splitlines()[0]
            raise InputError(f"cannot read {path} (band {b}) for scene statistics: {detail}") from None
    return np.stack(bands), mask


def _select(scene: Scene, preset: SensorPreset, bands: str | None) -> tuple[tuple[int, ...], tuple[str, ...]]:
    names = preset.names_for(scene)
    canon = [canonical_band(n) for n in names]
    wanted = [b.strip() for b in bands.split(",")] if bands else list(preset.rgb)
    indexes = []
    for b in wanted:
        if b.isdigit():
            i = int(b) - 1
            if not 0 <= i < scene.count:
                raise InputError(f"band {b} out of range: the scene has {scene.count} bands ({', '.join(names)})")
        elif canonical_band(b) in canon:
            i = canon.index(canonical_band(b))  # first occurrence: the first date of a multi-date stack
        else:
            raise InputError(f"no band {b!r} in {scene.paths[0]}: its bands are {', '.join(names)} (preset {preset.name}); pass --bands")
        indexes.append(i)
    return tuple(indexes), tuple(names[i] for i in indexes)


def _auto_offset(scene: Scene, preset: SensorPreset, sample: np.ndarray, valid: np.ndarray) -> tuple[float, str]:
    for key, value in scene.tags:
        if "BOA_ADD_OFFSET" in key.upper():
            return float(value) * preset.scale, f"offset {value} DN from the file's {key}"
    p1 = float(np.percentile(sample[:, valid], 1)) if valid.any() else 0.0
    if p1 >= 1000:
        return -1000 * preset.scale, f"offset -1000 DN (scene 1st percentile {p1:.0f} >= 1000: baseline >= 04.00)"
    return 0.0, f"no offset (scene 1st percentile {p1:.0f} < 1000: baseline < 04.00 or already removed)"


def make_adapter(scene: Scene, n_inputs: int = 3, sensor: str | None = None, bands: str | None = None) -> BandAdapter:
    """Build the scene's adapter: preset (``sensor`` or guessed), band selection, scene-wide stretch.

    Raises :class:`InputError` listing the scene's bands and the presets when the bands cannot be mapped.
    """
    preset = get_preset(sensor) if sensor else guess_preset(scene)
    if preset is None:
        if not bands:
            raise InputError(
                f"cannot map the {scene.count} bands of {scene.paths[0]} ({', '.join(scene.band_names)}, {scene.dtype}) to RGB: "
                f"pass --sensor (one of {', '.join(sorted(load_presets()))}) or --bands, e.g. --bands 3,2,1"
            )
        preset = get_preset("generic")
    indexes, names = _select(scene, preset, bands)
    if len(indexes) != n_inputs:
        raise InputError(f"the model takes {n_inputs} bands but {len(indexes)} were selected ({', '.join(names)})")
    nodata = scene.nodata if scene.nodata is not None else preset.nodata
    is_float = np.issubdtype(np.dtype(scene.dtype), np.floating)
    needs_data = preset.percentiles is not None or preset.offset == "auto" or is_float
    how = [f"preset {preset.name}"]
    offset = 0.0 if preset.offset == "auto" else float(preset.offset)
    nonfinite = sampled = 0
    if needs_data:
        sample, mask = _decimated(scene, indexes)
        probe = BandAdapter(preset.name, indexes, names, 1.0, 0.0, (0.0,) * n_inputs, (1.0,) * n_inputs, nodata, "")
        valid = probe.valid(sample, mask)  # NaN/inf pixels are invalid, so left out of every statistic
        sampled = int(sample.shape[1] * sample.shape[2])
        if is_float:
            nonfinite = int((~np.isfinite(sample)).any(axis=0).sum())
            if nonfinite:
                how.append(f"{nonfinite} of {sampled} sampled pixels non-finite (masked)")
        if preset.offset == "auto":
            offset, why = _auto_offset(scene, preset, sample, valid)
            how.append(why)
    if preset.percentiles is not None:
        if not valid.any():
            raise InputError(f"{scene.paths[0]} has no valid pixels in bands {', '.join(names)} (nodata {nodata})")
        scaled = sample[:, valid].astype(np.float64) * preset.scale + offset
        p, q = preset.percentiles
        lo = tuple(float(v) for v in np.percentile(scaled, p, axis=1))
        hi = tuple(float(v) for v in np.percentile(scaled, q, axis=1))
        how.append(f"percentiles {p:g}-{q:g} per band from a {sample.shape[2]}x{sample.shape[1]} decimated read of the whole scene")
    else:
        lo = (float(preset.stretch["lo"]),) * n_inputs  # type: ignore[arg-type]
        hi = (float(preset.stretch["hi"]),) * n_inputs  # type: ignore[arg-type]
        how.append("fixed stretch from the preset")
    return BandAdapter(preset.name, indexes, names, preset.scale, offset, lo, hi, nodata, "; ".join(how), nonfinite, sampled)
