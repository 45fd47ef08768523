"""What ``geodino encode`` would do with a scene, without running a model: :func:`scene_report` gathers it
as one JSON-ready dict (``geodino info --json``), :func:`format_report` writes it as text lines.

Only metadata and one decimated read per check are read. A raster that can be read never makes the report
fail: when the bands cannot be identified, a preset refuses (Sentinel-2 baseline unknown, clipping above
half of a band, an explicit ``--sensor`` that does not fit) or the scene itself is unusable (no georeference,
a rotated grid), the refusal goes to ``problem`` with a command that works where one exists. Missing or
unreadable files and bad options raise :class:`~geodino.errors.InputError` as every command does.

Top-level keys (always present, ``None`` where unknown): ``schema``, ``ok`` (encode would run as asked),
``model``, ``scene``, ``bands``, ``validity``, ``preset``, ``stretch``, ``resampling``, ``features``,
``tiles``, ``memory``, ``problem``; with ``estimate=True`` also ``estimate``: where the time of the run would
go, measured here (:func:`geodino.estimate.time_estimate`; ``None`` when encode would refuse). Non-finite floats
(a NaN nodata) are written as the strings ``"nan"``, ``"inf"``, ``"-inf"`` so that the document is strict JSON.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from odc.geo.geobox import GeoBox
from rasterio.errors import NotGeoreferencedWarning

from geodino.adapter import STATS_SIDE, BandAdapter, decimated_read, prepare
from geodino.bands import Band, with_family
from geodino.detect import Detection, detect, example, family_of
from geodino.device import resolve_device
from geodino.errors import InputError
from geodino.estimate import estimate_lines, estimate_memory, n_params, time_estimate
from geodino.job import BandChoice, Tiling
from geodino.models import WeightsSpec, get_spec
from geodino.scene import Scene, open_scene
from geodino.sensors import get_preset
from geodino.tiling import TilePlan, feature_geobox

#: Version of the report's layout; raised when a key changes meaning or disappears.
SCHEMA = 1
_KEYS = ("schema", "ok", "model", "scene", "bands", "validity", "preset", "stretch", "resampling", "features", "tiles", "memory", "problem")
#: Most band-pixels of the decimated read for the invalid fraction when no bands are selected (all bands are read).
_ALL_BANDS_BUDGET = 16 * STATS_SIDE**2


def scene_report(
    paths: str | Path | Sequence[str | Path], model: str = "dinov3_vitl16_sat493m", sensor: str | None = None,
    bands: str | None = None, tile: int = 512, overlap: int = 64, batch_size: int = 4, gsd: float | None = None,
    allow_clipping: bool = False, estimate: bool = False, device: str = "auto",
) -> dict[str, object]:  # fmt: skip
    """Everything ``geodino encode`` would decide for ``paths`` with these options, as a JSON-ready dict;
    ``estimate``: and where the time would go on ``device`` (seconds of measuring: a model is built and run).

    Refusals of the scene, of detection or of the adapter go to ``report["problem"]`` (``stage``, ``message``,
    ``example`` command, ``example_args``); missing/unreadable files and bad options raise :class:`InputError`.
    """
    spec = get_spec(model)
    _check_options(sensor, tile, overlap, batch_size, gsd, spec.patch_size)
    if estimate:
        resolve_device(device)
    n = spec.arch.in_chans
    report: dict[str, object] = dict.fromkeys(_KEYS)
    report.update(schema=SCHEMA, ok=False, model={"name": spec.name, "in_bands": n, "patch": spec.patch_size, "dim": spec.arch.embed_dim})
    try:
        scene = open_scene(paths)
    except InputError as exc:
        return _unusable(report, paths, exc) | ({"estimate": None} if estimate else {})
    det: Detection | None = None
    prepared: Scene | None = None
    adapter: BandAdapter | None = None
    problem: dict[str, object] | None = None
    try:
        det = detect(scene, n, sensor, bands)
    except InputError as exc:
        problem = _problem("detect", exc)
    if det is not None:
        try:
            prepared, adapter = prepare(scene, n, sensor, bands, gsd, allow_clipping)
        except InputError as exc:
            problem = _problem("adapter", exc)
            if not allow_clipping:  # refused for clipping only? then show the stretch that clips
                try:
                    prepared, adapter = prepare(scene, n, sensor, bands, gsd, True)
                    problem["stage"] = "clipping"
                except InputError:
                    pass
    if problem is not None:
        problem.update(_example(scene, n, problem["stage"] == "clipping", sensor, bands, gsd))
    identities = det.bands if det is not None else with_family(_plain_bands(scene), family_of(scene)[0])
    chosen = adapter.indexes if adapter is not None else det.indexes if det is not None else None
    grid = prepared if prepared is not None else _grid_guess(scene, chosen, gsd)
    report.update(
        ok=problem is None,
        scene=_scene(scene),
        bands=[_band(scene, i, b, chosen or ()) for i, b in enumerate(identities)],
        validity=_validity(scene, prepared, adapter),
        preset={"name": det.preset.name, "reason": det.reason, "notes": list(adapter.notes if adapter else det.notes)} if det else None,
        stretch=_stretch(adapter) if adapter is not None else None,
        resampling=_resampling(scene, grid if chosen is not None else None, chosen, adapter, gsd),
        problem=problem,
    )
    report.update(_plan(grid, spec, tile, overlap, batch_size, n, chosen is not None))
    if estimate:
        tiling = Tiling(tile=tile, overlap=overlap, batch_size=batch_size)
        choice = BandChoice(sensor=sensor, bands=bands, gsd=gsd, allow_clipping=allow_clipping)
        report["estimate"] = time_estimate(paths, model, tiling=tiling, choice=choice, device=device) if problem is None else None
    return report


def _check_options(sensor: str | None, tile: int, overlap: int, batch_size: int, gsd: float | None, patch: int) -> None:
    """Options that are wrong whatever the scene: refused before anything is read."""
    Tiling(tile=tile, overlap=overlap, batch_size=batch_size).check()
    TilePlan(patch, patch, tile, overlap, patch)  # tile/overlap multiples of the patch, overlap < tile
    if sensor:
        get_preset(sensor)
    if gsd is not None and not (math.isfinite(gsd) and gsd > 0):
        raise InputError(f"--gsd {gsd}: give a positive number of metres per pixel")


def _problem(stage: str, exc: InputError) -> dict[str, object]:
    return {"stage": stage, "message": " ".join(str(exc).split()), "example": None, "example_args": None, "example_checked": False}


def _example(scene: Scene, n: int, clipping: bool, sensor: str | None, bands: str | None, gsd: float | None) -> dict[str, object]:
    """A command that runs on the scene, checked with the adapter: the asked options plus ``--allow-clipping``
    when only clipping refused, else :func:`geodino.detect.example`'s ``--bands`` (then with ``--sensor generic``,
    then with ``--allow-clipping``)."""
    base = example(scene, n)
    pick = base.rsplit("--bands ", 1)[1]
    head = base.rsplit(" --bands ", 1)[0]
    if clipping:
        asked = [*(["--sensor", sensor] if sensor else []), *(["--bands", bands] if bands else []), *(["--gsd", f"{gsd:g}"] if gsd else [])]
        candidates = [([*asked, "--allow-clipping"], (sensor, bands, gsd, True))]
    else:
        candidates = [
            (["--bands", pick], (None, pick, None, False)),
            (["--sensor", "generic", "--bands", pick], ("generic", pick, None, False)),
            (["--sensor", "generic", "--bands", pick, "--allow-clipping"], ("generic", pick, None, True)),
        ]
    for args, (s, b, g, allow) in candidates:
        try:
            prepare(scene, n, s, b, g, allow)
        except InputError:
            continue
        return {"example": " ".join([head, *args]), "example_args": args, "example_checked": True}
    return {"example": base, "example_args": ["--bands", pick], "example_checked": False}


def _plain_bands(scene: Scene) -> tuple[Band, ...]:
    return scene.bands or tuple(Band(name, "index" if name.isdigit() else "description") for name in scene.band_names)


def _pixel(geobox: GeoBox) -> list[float]:
    a = geobox.affine
    return [abs(a.a), abs(a.e)]


def _scene(scene: Scene) -> dict[str, object]:
    h, w = scene.shape
    return {
        "paths": list(scene.paths), "width": w, "height": h, "count": scene.count, "dtype": scene.dtype, "crs": scene.crs,
        "pixel_size": _pixel(scene.geobox), "transform": list(scene.transform)[:6], "gsd_m": scene.gsd, "nodata": scene.nodata,
        "mask": scene.has_mask, "product": scene.product or None, "mixed_grids": bool(scene.band_grids),
    }  # fmt: skip


def _band(scene: Scene, i: int, b: Band, inputs: tuple[int, ...]) -> dict[str, object]:
    path, k = scene.band_sources[i]
    grid = scene.band_grids[i] if scene.band_grids else scene.geobox
    return {
        "index": i + 1, **b.record(), "file": path, "band_in_file": k, "pixel_size": _pixel(grid),
        "inputs": [j + 1 for j, x in enumerate(inputs) if x == i],
    }  # fmt: skip


def _validity(scene: Scene, prepared: Scene | None, adapter: BandAdapter | None) -> dict[str, object]:
    """Share of a decimated read's pixels that are invalid (non-finite in a band, nodata in all, masked), over the
    model's bands on the grid it sees, or over every band when none is selected."""
    if prepared is not None and adapter is not None:
        read, indexes, nodata = prepared, tuple(sorted(set(adapter.indexes))), adapter.nodata
    else:
        indexes, nodata = tuple(range(scene.count)), scene.nodata
        read = scene.on_grid_of(indexes)[0] if scene.band_grids else scene
    side = STATS_SIDE if len(indexes) <= 16 else max(64, int(math.sqrt(_ALL_BANDS_BUDGET / len(indexes))))
    sample, mask = decimated_read(read, indexes, side)
    finite = np.isfinite(sample).all(axis=0) if np.issubdtype(sample.dtype, np.floating) else np.ones(sample.shape[1:], bool)
    is_nodata = np.zeros(sample.shape[1:], bool)
    if nodata is not None and not np.isnan(nodata):
        is_nodata = (sample == np.asarray(nodata).astype(sample.dtype)).all(axis=0)
    masked = ~mask if mask is not None else np.zeros(sample.shape[1:], bool)
    invalid = ~finite | is_nodata | masked
    total = int(sample.shape[1] * sample.shape[2])
    return {
        "bands": [i + 1 for i in indexes], "sample_shape": [int(sample.shape[1]), int(sample.shape[2])], "sampled": total,
        "nodata_value": nodata, "nodata": int(is_nodata.sum()), "masked": int(masked.sum()), "nonfinite": int((~finite).sum()),
        "invalid": int(invalid.sum()), "invalid_fraction": float(invalid.sum()) / max(total, 1),
    }  # fmt: skip


def _stretch(adapter: BandAdapter) -> dict[str, object]:
    per = [
        {"input": k + 1, "band": i + 1, "name": name, "lo": lo, "hi": hi, "clipped_low": low, "clipped_high": high}
        for k, (i, name, lo, hi, low, high) in enumerate(
            zip(adapter.indexes, adapter.names, adapter.lo, adapter.hi, adapter.clipped_low, adapter.clipped_high, strict=True)
        )
    ]  # fmt: skip
    return {"how": adapter.stretch, "scale": adapter.scale, "offset": adapter.offset, "nodata": adapter.nodata, "inputs": per}


def _resampling(
    scene: Scene, grid: Scene | None, chosen: tuple[int, ...] | None, adapter: BandAdapter | None, gsd: float | None
) -> dict[str, object]:
    """Which files encode reads, which it resamples on the fly and how (``read``/``resampled`` None when no bands are chosen)."""
    used = {scene.band_sources[i][0] for i in chosen} if chosen is not None else None
    warp = set(grid.warp) if grid is not None else None
    files = []
    for path in scene.paths:
        i = next(k for k, (p, _) in enumerate(scene.band_sources) if p == path)
        own = scene.band_grids[i] if scene.band_grids else scene.geobox
        files.append({
            "path": path, "width": own.shape.x, "height": own.shape.y, "pixel_size": _pixel(own),
            "read": None if used is None else path in used, "resampled": None if warp is None else path in warp,
        })  # fmt: skip
    method = (grid.resampling or None) if grid is not None else None
    description = (adapter.resampling or None) if adapter is not None else None
    return {"gsd_requested": gsd, "method": method, "description": description, "files": files}


def _grid_guess(scene: Scene, chosen: tuple[int, ...] | None, gsd: float | None) -> Scene:
    """The grid encode would see when the adapter refused: that of the ``chosen`` bands (else the scene's finest), at ``gsd``
    where it applies (as :func:`geodino.adapter.prepare` makes it)."""
    grid = scene
    try:
        if chosen is not None:
            grid = scene.on_grid_of(chosen)[0]
        if gsd is not None:
            grid = grid.at_gsd(gsd)[0]
    except InputError:
        pass
    return grid


def _plan(grid: Scene, spec: WeightsSpec, tile: int, overlap: int, batch_size: int, n: int, chosen: bool) -> dict[str, object]:
    plan = TilePlan(grid.shape[0], grid.shape[1], tile, overlap, spec.patch_size)
    fg = feature_geobox(grid.geobox, plan.patch)
    rows, cols = plan.shape
    dim = spec.arch.embed_dim
    mem = estimate_memory(plan, dim, batch_size, n_params(spec), n)
    return {
        "features": {
            "width": fg.shape.x, "height": fg.shape.y, "channels": dim, "pixel_size": _pixel(fg), "crs": grid.crs,
            "grid": "the grid of the selected bands" if chosen else "the scene's grid as opened (no bands chosen)",
            "scene_width": grid.shape[1], "scene_height": grid.shape[0], "scene_pixel_size": _pixel(grid.geobox),
        },
        "tiles": {"tile": tile, "overlap": overlap, "patch": plan.patch, "rows": rows, "cols": cols, "count": len(plan)},
        "memory": {"batch_size": batch_size, "parts": mem, "total": sum(mem.values())},
    }  # fmt: skip


def _unusable(report: dict[str, object], paths: str | Path | Sequence[str | Path], exc: InputError) -> dict[str, object]:
    """The report of files that open as rasters but not as a scene (no georeference, rotated, mixed CRS or types);
    re-raises ``exc`` when a file is missing or cannot be read at all."""
    items = [str(paths)] if isinstance(paths, (str, Path)) else [str(p) for p in paths]
    files: list[dict[str, object]] = []
    bands: list[dict[str, object]] = []
    for path in items:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                ds = rasterio.open(path)
        except Exception:
            raise exc from None
        with ds:
            crs, pixel = ds.crs.to_string() if ds.crs else None, [abs(ds.transform.a), abs(ds.transform.e)]
            files.append({
                "path": path, "width": ds.width, "height": ds.height, "count": ds.count, "dtypes": list(ds.dtypes), "crs": crs,
                "transform": list(ds.transform)[:6], "nodata": ds.nodata,
            })  # fmt: skip
            for k in range(ds.count):
                name, src = (ds.descriptions[k], "description") if ds.descriptions[k] else (str(len(bands) + 1), "index")
                bands.append({
                    "index": len(bands) + 1, "name": name, "name_from": src, "common": None, "common_from": "", "file": path,
                    "band_in_file": k + 1, "pixel_size": pixel, "inputs": [],
                })  # fmt: skip
    report.update(scene={"paths": items, "files": files}, bands=bands, problem=_problem("scene", exc))
    return report


def report_json(report: dict[str, object]) -> str:
    """The report as one strict JSON document (non-finite floats as strings)."""

    def clean(x: object) -> object:
        if isinstance(x, dict):
            return {str(k): clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        if isinstance(x, (np.integer, np.floating, np.bool_)):
            x = x.item()
        if isinstance(x, float) and not math.isfinite(x):
            return str(x)
        return x

    return json.dumps(clean(report), indent=2, allow_nan=False)


def _px(size: list[float]) -> str:
    return f"{size[0]:g} x {size[1]:g}"


def format_report(report: dict[str, object]) -> list[str]:
    """The report as aligned text lines (``geodino info``)."""
    r: dict[str, Any] = report
    out: list[str] = []
    add = lambda label, text: out.append(f"{label:<11}{text}")  # noqa: E731
    sc = r["scene"]
    add("scene", ", ".join(sc["paths"]))
    if "files" in sc:  # unusable as a scene: the files as rasterio reads them
        for f in sc["files"]:
            size = f"{f['width']}x{f['height']} px, {f['count']} band(s) {'/'.join(sorted(set(f['dtypes'])))}"
            add("file", f"{Path(f['path']).name}: {size}, CRS {f['crs']}, nodata {f['nodata']}")
    else:
        mixed = ", band files on different grids" if sc["mixed_grids"] else ""
        size = f"{sc['width']}x{sc['height']} px, {sc['count']} bands {sc['dtype']}"
        add("grid", f"{size}, {sc['crs']}, pixel {_px(sc['pixel_size'])}{mixed}")
        add("nodata", f"{sc['nodata']}, {'an internal mask / alpha band marks invalid pixels' if sc['mask'] else 'no mask'}")
    for b in r["bands"]:
        common = f"{b['common']} ({b['common_from']})" if b["common"] else "unknown"
        feeds = f" -> model input {','.join(map(str, b['inputs']))}" if b["inputs"] else ""
        source = f"{Path(b['file']).name} band {b['band_in_file']}"
        add(f"band {b['index']}", f"{b['name']} (name from {b['name_from']}): {common}; {source}{feeds}")
    v = r["validity"]
    if v:
        parts = ", ".join(f"{v[k]} {k}" for k in ("nodata", "masked", "nonfinite") if v[k]) or "none"
        read = f"bands {','.join(map(str, v['bands']))}, {v['sample_shape'][1]}x{v['sample_shape'][0]} decimated read"
        add("invalid", f"{v['invalid_fraction']:.1%} of {v['sampled']} sampled pixels ({parts}; nodata value {v['nodata_value']}, {read})")
    pr, p, st, rs = r["preset"], r["problem"], r["stretch"], r["resampling"]
    add("preset", pr["reason"] if pr else "none")
    if p:
        add("problem", f"{p['stage']}: {p['message']}")
        if p["example"]:
            add("try", p["example"] + ("" if p["example_checked"] else " (not checked)"))
    if st:
        per = ", ".join(f"{s['name']} {s['lo']:.4g}-{s['hi']:.4g}" for s in st["inputs"])
        add("stretch", f"{per} ({st['how']})")
        clip = ", ".join(f"{s['name']} {s['clipped_low']:.1%} below / {s['clipped_high']:.1%} above" for s in st["inputs"])
        add("clipping", clip + (" (runs only with --allow-clipping)" if p and p["stage"] == "clipping" else ""))
    for note in pr["notes"] if pr else ():
        if not (rs and rs["description"] and note in rs["description"]):
            add("note", note)
    if rs:
        chosen = any(f["read"] is not None for f in rs["files"])
        add("resampling", rs["description"] or rs["method"] or ("none" if chosen else "unknown until the bands are chosen"))
        if sc.get("mixed_grids") or (chosen and not all(f["read"] for f in rs["files"])):
            for f in rs["files"]:
                state = "?" if f["read"] is None else "resampled" if f["resampled"] else "read" if f["read"] else "not read"
                add("  file", f"{Path(f['path']).name}: pixel {_px(f['pixel_size'])}, {f['width']}x{f['height']} px, {state}")
    fe, t, m = r["features"], r["tiles"], r["memory"]
    if fe:
        px = f"{fe['scene_width']}x{fe['scene_height']} px at {_px(fe['scene_pixel_size'])}"
        grid = f"{fe['channels']} channels (from {px}, {fe['grid']})"
        add("features", f"{fe['width']}x{fe['height']} cells, pixel {_px(fe['pixel_size'])}, {fe['crs']}, {grid}")
        add("tiles", f"{t['rows']}x{t['cols']} = {t['count']} tiles of {t['tile']} px, overlap {t['overlap']} px")
        parts = ", ".join(f"{k} {n / 2**20:,.0f} MiB" for k, n in m["parts"].items())
        add("memory", f"~{m['total'] / 2**30:.2f} GiB for {r['model']['name']} with batch {m['batch_size']}: {parts}")
    if "estimate" in r:
        for label, text in estimate_lines(r["estimate"]) if r["estimate"] else [("estimate", "none: encode would refuse")]:
            add(label, text)
    add("encode", "would run" if r["ok"] else "would refuse (see problem)")
    return out


__all__ = ["SCHEMA", "format_report", "report_json", "scene_report"]
