"""The channel adapter: scene bands -> the model's input bands, DN -> reflectance -> [0, 1].

A :class:`BandAdapter` is a value built once per scene (:func:`prepare`) from the preset and bands that
:mod:`geodino.detect` chose from evidence (or ``--sensor``/``--bands``) and one decimated read of the
whole scene (offset facts, percentile stretch, clipping check). The same parameters apply to every
tile, so there are no seams from per-tile stretching, and they are recorded in every output. The
weights' mean/std are applied afterwards by the spec.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, replace

import numpy as np
from rasterio.enums import Resampling
from rasterio.errors import RasterioIOError
from rasterio.windows import Window

from geodino.detect import Detection, band_record, detect, sentinel2_offset
from geodino.errors import InputError
from geodino.scene import Scene, open_source
from geodino.sensors import SensorPreset
from geodino.steps import step

log = logging.getLogger(__name__)

#: Longest side of the decimated read used for scene-wide statistics (overviews are used when present).
STATS_SIDE = 1024


#: Fractions of a selected band's valid pixels beyond either end of the stretch: warn above, refuse above.
CLIP_WARN, CLIP_REFUSE = 0.05, 0.5


@dataclass(frozen=True)
class BandAdapter:
    """Scene-fixed preprocessing: ``x = clip((DN * scale + offset - lo) / (hi - lo), 0, 1)`` per band.

    ``indexes`` are 0-based scene band indexes feeding the model's bands in order; ``lo``/``hi`` are
    per selected band, in scaled units. ``reason`` says why the preset, ``bands`` every scene band's
    identity and its source, ``clipped_low``/``clipped_high`` the fraction of each selected band's valid
    sampled pixels beyond the stretch, ``notes`` what the user should be told.
    """

    preset: str
    indexes: tuple[int, ...]
    names: tuple[str, ...]
    scale: float
    offset: float
    lo: tuple[float, ...]
    hi: tuple[float, ...]
    nodata: float | None
    stretch: str  # how lo/hi (and the offset) were obtained
    nonfinite_sampled: int = 0  # pixels of the decimated read with NaN/inf in a selected band (float scenes)
    sampled: int = 0  # pixels in the decimated read (0: none was made)
    reason: str = ""
    bands: tuple[dict[str, str | None], ...] = ()
    clipped_low: tuple[float, ...] = ()
    clipped_high: tuple[float, ...] = ()
    resampling: str = ""  # what was resampled and how ("" when the scene is read as it is)
    gsd: float | None = None  # metres per pixel of the grid the model sees
    notes: tuple[str, ...] = ()
    fixed_stretch: bool = False  # lo/hi from the preset (a physical stretch), not from this scene's percentiles

    def to_unit(self, raw: np.ndarray) -> np.ndarray:
        """``(C, H, W)`` DNs of the selected bands -> float32 in [0, 1]."""
        x = raw.astype(np.float32)  # a new array: the steps below work in place (the same float32 operations, in order)
        x *= np.float32(self.scale)
        x += np.float32(self.offset)
        lo = np.asarray(self.lo, np.float32)[:, None, None]
        span = np.maximum(np.asarray(self.hi, np.float32)[:, None, None] - lo, np.float32(1e-12))
        x -= lo
        x /= span
        return np.clip(x, 0.0, 1.0, out=x)

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

    def selected(self) -> list[dict[str, str | None]]:
        """The identities of the bands feeding the model, in order."""
        return [self.bands[i] for i in self.indexes] if self.bands else [{"name": n} for n in self.names]

    def record(self) -> dict[str, object]:
        """Everything needed to reproduce the preprocessing (written to output tags). Independent of the order
        the band files were given in: bands by file and identity, the model's inputs by identity."""
        rec = asdict(self)
        del rec["indexes"]
        strip = lambda b: {k: v for k, v in b.items() if k != "index"}  # noqa: E731
        rec["inputs"] = [strip(b) for b in self.selected()]
        rec["bands"] = sorted((strip(b) for b in self.bands), key=lambda b: (str(b.get("file")), str(b.get("band")), str(b["name"])))
        return rec

    def to_json(self) -> str:
        return json.dumps(self.record(), separators=(",", ":"))


def decimated_read(scene: Scene, indexes: tuple[int, ...], side: int = STATS_SIDE) -> tuple[np.ndarray, np.ndarray | None]:
    """``(C, h, w)`` nearest-neighbour decimated read of the selected bands (overviews used when present)."""
    h, w = scene.shape
    f = max(1.0, max(h, w) / side)
    out_h, out_w = max(1, round(h / f)), max(1, round(w / f))
    window = Window(scene.offset[1], scene.offset[0], w, h)
    bands, mask = [], None
    for i in indexes:
        path, b = scene.band_sources[i]
        try:
            ds, handles = open_source(scene, path)
            try:
                bands.append(ds.read(b, window=window, out_shape=(out_h, out_w), resampling=Resampling.nearest))
                if scene.has_mask and mask is None:
                    mask = ds.dataset_mask(window=window, out_shape=(out_h, out_w), resampling=Resampling.nearest) > 0
            finally:
                for hd in handles:
                    hd.close()
        except RasterioIOError as exc:
            detail = str(exc.__cause__ or exc).splitlines()[0]
            raise InputError(f"cannot read {path} (band {b}) for scene statistics: {detail}") from None
    return np.stack(bands), mask


def _clipping(
    det: Detection, scaled: np.ndarray, lo: tuple[float, ...], hi: tuple[float, ...], allow: bool
) -> tuple[list[float], list[float], list[str]]:
    """Fractions of valid sampled pixels below ``lo`` / above ``hi`` per selected band; a note above
    :data:`CLIP_WARN`, a refusal above :data:`CLIP_REFUSE` unless ``allow``."""
    n = max(scaled.shape[1], 1)
    low = [float((scaled[k] < lo[k]).sum()) / n for k in range(len(lo))]
    high = [float((scaled[k] > hi[k]).sum()) / n for k in range(len(hi))]
    label = lambda k: det.bands[det.indexes[k]].label() if det.bands else str(det.indexes[k] + 1)  # noqa: E731
    worst = max(range(len(lo)), key=lambda k: max(low[k], high[k]))
    frac = ", ".join(f"{label(k)} {low[k]:.0%} below / {high[k]:.0%} above" for k in range(len(lo)))
    share = max(low[worst], high[worst])
    if share > CLIP_REFUSE and not allow:
        end = "below the stretch (black)" if low[worst] >= high[worst] else "above the stretch (white)"
        raise InputError(
            f"{det.preset.name}: {share:.0%} of the valid pixels of {label(worst)} fall {end}, so the model would see a "
            f"{'black' if low[worst] >= high[worst] else 'white'} picture ({frac}): pass another --sensor (e.g. generic with "
            "--bands for a scene-wide percentile stretch), or --allow-clipping if the preset is right "
            "(e.g. snow under a reflectance preset)"
        )
    notes = [f"{det.preset.name}: stretch clips more than {CLIP_WARN:.0%} of a band's valid pixels ({frac})"] if share > CLIP_WARN else []
    return low, high, notes


def _cannot_clip(dtype: str, preset: SensorPreset, offset: float) -> bool:
    """Whether every value of an integer ``dtype`` lands inside the preset's fixed stretch (uint8 under /255: no sample needed)."""
    if not np.issubdtype(np.dtype(dtype), np.integer):
        return False
    info = np.iinfo(np.dtype(dtype))
    ends = sorted((info.min * preset.scale + offset, info.max * preset.scale + offset))
    return preset.stretch_end("lo") <= ends[0] and ends[1] <= preset.stretch_end("hi")


def prepare(
    scene: Scene, n_inputs: int = 3, sensor: str | None = None, bands: str | None = None,
    gsd: float | None = None, allow_clipping: bool = False, bands_from: str = "--bands",
) -> tuple[Scene, BandAdapter]:  # fmt: skip
    """The scene on the grid the model will see and its adapter: preset and bands from evidence
    (:func:`geodino.detect.detect`), grid of the selected bands or ``gsd`` metres, one decimated read
    for the offset, the stretch and the clipping check.

    Raises :class:`InputError` (one line) when the bands cannot be identified, an explicit preset does not
    fit, or more than half of a band's valid pixels would clip (unless ``allow_clipping``).
    """
    det = detect(scene, n_inputs, sensor, bands)
    if bands and bands_from != "--bands":  # e.g. a model's own input bands: say where they came from
        det = replace(det, reason=det.reason.replace(" from --bands", f" from {bands_from}"))
    preset, indexes = det.preset, det.indexes
    scene, notes = scene.on_grid_of(indexes)
    grid_notes = list(notes)
    if gsd is not None:
        scene, note = scene.at_gsd(gsd)
        grid_notes.append(note)
    names = tuple(det.bands[i].name for i in indexes)
    nodata = scene.nodata if scene.nodata is not None else preset.nodata
    is_float = np.issubdtype(np.dtype(scene.dtype), np.floating)
    how = [f"preset {preset.name}"]
    offset = 0.0 if preset.offset == "auto" else float(preset.offset)
    if preset.offset == "auto":
        offset, why = sentinel2_offset(scene, preset.scale)
        how.append(why)
    clip_notes: list[str]
    if preset.percentiles is None and _cannot_clip(scene.dtype, preset, offset):
        lo = (preset.stretch_end("lo"),) * n_inputs
        hi = (preset.stretch_end("hi"),) * n_inputs
        how.append(f"fixed stretch from the preset (the whole {scene.dtype} range fits it: nothing can clip, no sample read)")
        low, high, clip_notes, nonfinite, sampled = [0.0] * n_inputs, [0.0] * n_inputs, [], 0, 0
    else:
        with step(log, "scene statistics: a decimated read of %d band(s) of %s", len(indexes), scene.paths[0]):
            sample, mask = decimated_read(scene, indexes)
        probe = BandAdapter(preset.name, indexes, names, 1.0, 0.0, (0.0,) * n_inputs, (1.0,) * n_inputs, nodata, "")
        valid = probe.valid(sample, mask)  # NaN/inf pixels are invalid, so left out of every statistic
        sampled = int(sample.shape[1] * sample.shape[2])
        nonfinite = int((~np.isfinite(sample)).any(axis=0).sum()) if is_float else 0
        if nonfinite:
            how.append(f"{nonfinite} of {sampled} sampled pixels non-finite (masked)")
        if not valid.any():
            raise InputError(f"{scene.paths[0]} has no valid pixels in bands {', '.join(names)} (nodata {nodata})")
        scaled = sample[:, valid].astype(np.float64) * preset.scale + offset
        if preset.percentiles is not None:
            p, q = preset.percentiles
            lo = tuple(float(v) for v in np.percentile(scaled, p, axis=1))
            hi = tuple(float(v) for v in np.percentile(scaled, q, axis=1))
            how.append(f"percentiles {p:g}-{q:g} per band from a {sample.shape[2]}x{sample.shape[1]} decimated read of the whole scene")
        else:
            lo = (preset.stretch_end("lo"),) * n_inputs
            hi = (preset.stretch_end("hi"),) * n_inputs
            how.append("fixed stretch from the preset")
        low, high, clip_notes = _clipping(det, scaled, lo, hi, allow_clipping)
    adapter = BandAdapter(
        preset.name, indexes, names, preset.scale, offset, lo, hi, nodata, "; ".join(how), nonfinite, sampled,
        reason=det.reason, bands=tuple(band_record(det.bands, scene.band_sources)), clipped_low=tuple(low), clipped_high=tuple(high),
        resampling="; ".join(grid_notes), gsd=scene.gsd, notes=(*det.notes, *grid_notes, *clip_notes),
        fixed_stretch=preset.percentiles is None,
    )  # fmt: skip
    return scene, adapter


def make_adapter(
    scene: Scene, n_inputs: int = 3, sensor: str | None = None, bands: str | None = None, allow_clipping: bool = False
) -> BandAdapter:
    """The adapter of :func:`prepare` for a scene whose bands share one grid (refuses scenes that need resampling)."""
    prepared, adapter = prepare(scene, n_inputs, sensor, bands, allow_clipping=allow_clipping)
    if prepared.geobox != scene.geobox or prepared.warp:
        raise InputError(
            "the selected bands are on another grid than the scene: use geodino.adapter.prepare, which returns the scene to read"
        )
    return adapter
