"""Which sensor preset applies to a scene, which of its bands feed the model, and why: from evidence only.

Pure functions over a :class:`~geodino.scene.Scene` (metadata already read) and the presets. Evidence, in
order: STAC metadata (common names, properties), product ids and file names (``S2A_MSIL2A``,
``LC08_L2SP``, ``L8-B4``, NAIP quarter-quad names), GDAL metadata (``PROCESSING_BASELINE``,
``BOA_ADD_OFFSET``), band names in a sensor's style, colour interpretation and descriptions, data type.
A physical scaling is applied only when a product pattern or metadata entry singles its preset out;
otherwise correctly identified bands get a scene-wide percentile stretch, and unidentifiable bands are
refused with a message listing them and a command that works.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass
from pathlib import Path

from geodino.bands import (
    FAMILIES,
    Band,
    Family,
    canonical_band,
    describe,
    description_common,
    find,
    fits_style,
    is_band_number_name,
    with_family,
)  # fmt: skip
from geodino.errors import InputError
from geodino.scene import Scene
from geodino.sensors import SensorPreset, found_in, get_preset, load_presets

#: Sentinel-2 processing baseline 04.00 (BOA_ADD_OFFSET = -1000) reached the archive on this date.
S2_BASELINE_04_DATE = dt.date(2022, 1, 25)


@dataclass(frozen=True)
class Detection:
    """The outcome: the preset, every band's identity, the bands feeding the model, and the reasons."""

    preset: SensorPreset
    bands: tuple[Band, ...]  # every scene band
    indexes: tuple[int, ...]  # 0-based scene bands feeding the model, in order
    reason: str  # why this preset (and these bands)
    notes: tuple[str, ...] = ()  # what the user must be told (a fallback taken)


def family_of(scene: Scene) -> tuple[Family | None, str]:
    """The sensor family whose band names the scene uses, and the evidence; ``(None, why)`` when unknown or conflicting."""
    hits: dict[str, str] = {}
    for f in FAMILIES.values():
        for hint in f.hints:
            found = next(((m, t) for t in scene.evidence if (m := re.search(hint, t, re.IGNORECASE))), None)
            if found:
                hits[f.name] = found_in(*found)
                break
    numbered = [b.name for b in _bands(scene) if is_band_number_name(b.name)]
    styled = [f.name for f in FAMILIES.values() if numbered and all(fits_style(f, n) for n in numbered)]
    if len(hits) == 1:
        name = next(iter(hits))
        return FAMILIES[name], f"{FAMILIES[name].sensor}: {hits[name]}"
    if len(hits) > 1:
        both = [n for n in hits if n in styled]
        if len(both) == 1:
            return FAMILIES[both[0]], f"{FAMILIES[both[0]].sensor}: {hits[both[0]]}, band names {', '.join(numbered)}"
        return None, f"conflicting sensor evidence ({'; '.join(f'{FAMILIES[n].sensor}: {w}' for n, w in hits.items())})"
    if len(styled) == 1:
        f = FAMILIES[styled[0]]
        return f, f"{f.sensor}: band names {', '.join(numbered)} are written the {f.sensor} way"
    if numbered:
        return None, f"band names {', '.join(numbered)} mean different bands on different sensors and nothing names the sensor"
    return None, ""


def _bands(scene: Scene) -> tuple[Band, ...]:
    return scene.bands or tuple(Band(n, "index" if n.isdigit() else "description") for n in scene.band_names)


def _layout_fits(scene: Scene, preset: SensorPreset | None) -> bool:
    """Whether ``preset`` has a layout naming this scene's bands, all of which the file leaves unnamed."""
    return preset is not None and scene.count in preset.bands and all(b.name_from == "index" for b in _bands(scene))


def _named(scene: Scene, preset: SensorPreset | None, family: Family | None, why: str, explicit: bool = False) -> tuple[Band, ...]:
    """Every band's identity: the preset's layout for index-only names (only when the preset was asked for, or
    its product defines the band order), then the family's name table."""
    bands = _bands(scene)
    if preset is not None and (explicit or preset.standard_layout) and _layout_fits(scene, preset):
        layout = preset.bands[scene.count]
        bands = tuple(
            Band(n, f"preset {preset.name} layout for {scene.count} bands ({why})", *_common(n)) for n in layout
        )  # fmt: skip
    return with_family(bands, family or (preset.sensor_family if preset else None))


def _common(name: str) -> tuple[str | None, str]:
    c = description_common(name)
    return (c, "preset layout") if c else (None, "")


def _select(bands: tuple[Band, ...], wanted: list[str], scene: Scene) -> tuple[int, ...] | None:
    """Scene band indexes for ``wanted`` (common names, band names or 1-based indexes), None if any is missing."""
    out = []
    for w in wanted:
        if w.strip().isdigit():
            i = int(w) - 1
            if not 0 <= i < scene.count:
                raise InputError(f"band {w} out of range: the scene has {scene.count} bands ({describe(bands)})")
        else:
            j = find(bands, w)
            if j is None:
                return None
            i = j
        out.append(i)
    return tuple(out)


def example(scene: Scene, n_inputs: int = 3) -> str:
    """A command that runs on this scene: its first bands (repeated as needed) through a percentile stretch, or,
    when its bands are sensor band numbers, the red, green, blue of each sensor they could be from."""
    files = " ".join(Path(p).name for p in scene.paths[:4]) + (" ..." if len(scene.paths) > 4 else "")
    names = [b.name for b in _bands(scene)]
    per_family = []
    for f in FAMILIES.values():
        by_common = {c: n for n in names if is_band_number_name(n) and fits_style(f, n) for c in [f.table[canonical_band(n)]]}
        if n_inputs == 3 and all(c in by_common for c in ("red", "green", "blue")):
            per_family.append(f"--bands {by_common['red']},{by_common['green']},{by_common['blue']} if it is {f.sensor}")
    if per_family:
        return f"geodino encode {files} OUT.tif {' or '.join(per_family)}"
    pick = ",".join(str(min(i, scene.count - 1) + 1) for i in range(n_inputs))
    return f"geodino encode {files} OUT.tif --bands {pick}"


def _refuse_unmapped(scene: Scene, bands: tuple[Band, ...], n_inputs: int, why: str, layout_hint: str = "") -> InputError:
    presets = ", ".join(sorted(load_presets()))
    because = f" ({why})" if why else ""
    sensor = f"pass {layout_hint}" if layout_hint else f"pass --sensor (one of {presets})"
    return InputError(
        f"cannot tell which bands of {Path(scene.paths[0]).name} are red, green, blue{because}: its {scene.count} "
        f"band(s), {scene.dtype}, are {describe(bands)}; say which with --bands (names or 1-based indexes), e.g. "
        f"{example(scene, n_inputs)}, or {sensor}"
    )


def _check_explicit(scene: Scene, preset: SensorPreset) -> None:
    """Refuse an explicit preset whose data type, band count or band family does not fit the scene."""
    name = Path(scene.paths[0]).name
    if not preset.takes_dtype(scene.dtype):
        raise InputError(
            f"--sensor {preset.name} takes {'/'.join(preset.match_dtype)} data but {name} is {scene.dtype}: "
            f"pass a preset for {scene.dtype} data, or --sensor generic with --bands for a percentile stretch"
        )
    if preset.match_count and scene.count not in preset.match_count:
        raise InputError(f"--sensor {preset.name} takes {'/'.join(map(str, preset.match_count))} band(s) but {name} has {scene.count}")
    fam = preset.sensor_family
    if fam is not None:
        found, why = family_of(scene)
        if found is not None and found.name != fam.name:
            raise InputError(f"--sensor {preset.name} is for {fam.sensor} bands but the scene is {why}: pass a {found.sensor} preset")
        odd = [b.name for b in _bands(scene) if is_band_number_name(b.name) and not fits_style(fam, b.name)]
        if odd:
            raise InputError(f"--sensor {preset.name} is for {fam.sensor} bands but {', '.join(odd)} are not {fam.sensor} band names")


def detect(scene: Scene, n_inputs: int = 3, sensor: str | None = None, bands: str | None = None) -> Detection:
    """Choose the preset and the bands feeding the model (``n_inputs`` of them) from evidence; raise
    :class:`InputError` (one line) when an explicit ``sensor`` does not fit or the bands cannot be identified."""
    wanted = [b.strip() for b in bands.split(",")] if bands else None
    if sensor:
        preset = get_preset(sensor)
        _check_explicit(scene, preset)
        found = None if preset.sensor_family else family_of(scene)[0]  # a family-free preset (generic, pan) keeps the evidence
        named = _named(scene, preset, found, f"--sensor {preset.name}", explicit=True)
        if scene.count == 1 and set(preset.rgb) == {"pan"} and named[0].common is None:
            named = (Band(named[0].name, named[0].name_from, "pan", f"one-band scene (--sensor {preset.name})"),)
        det = _finish(scene, preset, named, wanted, n_inputs, f"{preset.name}: asked for with --sensor")
        if _layout_fits(scene, preset):
            layout = ", ".join(preset.bands[scene.count])
            note = f"{Path(scene.paths[0]).name} names none of its bands: taken in the {preset.name} preset's order {layout} (--sensor)"
            return Detection(det.preset, det.bands, det.indexes, det.reason, (note,))
        return det
    family, fam_why = family_of(scene)
    presets = [p for p in load_presets().values() if p.guess and p.takes_dtype(scene.dtype)]
    layout_hint = ""
    for p in presets:
        if not p.detectable or (p.family and family is not None and p.family != family.name):
            continue
        if p.match_count and scene.count not in p.match_count and scene.count not in p.bands:
            continue
        ev = p.evidence(scene.evidence)
        if ev is not None:
            if _layout_fits(scene, p) and not p.standard_layout and not layout_hint:
                layout_hint = f"--sensor {p.name} if the bands are in its order {', '.join(p.bands[scene.count])} ({ev})"
            named = _named(scene, p, family, ev)
            if wanted or _select(named, list(p.rgb), scene) is not None:
                return _finish(scene, p, named, wanted, n_inputs, f"{p.name}: {ev}")
    named = _named(scene, None, family, fam_why)
    by = {"generic": load_presets()["generic"], **{p.name: p for p in presets}}
    if scene.count == 1 and "pan" in by and not wanted:
        b = named[0]
        ident = Band(b.name, b.name_from, b.common or "pan", b.common_from or "one-band scene (pan preset)")
        what = f"its one band is {b.common}" if b.common else "one band"
        return _finish(scene, by["pan"], (ident,), None, n_inputs, f"pan: {what}, replicated to R, G, B")
    rgb = _select(named, ["red", "green", "blue"], scene)
    if rgb is not None or wanted:
        eight = scene.dtype == "uint8" and "rgb8" in by
        if rgb is not None:
            src = sorted({named[i].common_from for i in rgb})
            how = f"red, green, blue identified by {' and '.join(src)}"
        else:
            how = f"bands chosen with --bands {bands}"
        if eight:
            return _finish(scene, by["rgb8"], named, wanted, n_inputs, f"rgb8: uint8 data, {how}")
        level = (
            f"{fam_why}, but no product id or metadata says the processing level or scaling"
            if family
            else f"{scene.dtype} data and no product id or metadata names a sensor"
        )
        return _finish(scene, by["generic"], named, wanted, n_inputs, f"generic (scene-wide percentile stretch): {how}; {level}")
    unnamed = all(b.common is None and not is_band_number_name(b.name) for b in named)
    if scene.count == 3 and unnamed and len(scene.paths) == 1:  # never for band files: their order is the user's glob
        order = tuple(
            Band(b.name, b.name_from, c, "file order (3 unnamed bands)") for b, c in zip(named, ("red", "green", "blue"), strict=True)
        )
        note = (
            f"{Path(scene.paths[0]).name}: its 3 bands carry no names or colour interpretation: taken as red, green, blue "
            "in file order (pass --bands 3,2,1 if it is BGR)"
        )
        det = _finish(scene, by["generic"], order, None, n_inputs, "generic (scene-wide percentile stretch): 3 unnamed bands in file order")
        return Detection(det.preset, det.bands, det.indexes, det.reason, (note,))
    if n_inputs == 0:  # identify(): the identities found, even when red, green, blue are not among them
        return Detection(by["generic"], named, (), fam_why)
    raise _refuse_unmapped(scene, named, n_inputs, fam_why, layout_hint)


def identify(scene: Scene, sensor: str | None = None) -> tuple[Band, ...]:
    """Every band's identity exactly as :func:`detect` names them (STAC, the family's table, a preset's layout with
    ``sensor``, pan for one band, file order for 3 unnamed bands), without choosing the model's bands: a scene
    without red, green or blue is not refused (a head may take nir, red, green). An unfit ``sensor`` still is."""
    return detect(scene, 0, sensor).bands


def _finish(scene: Scene, preset: SensorPreset, named: tuple[Band, ...], wanted: list[str] | None, n_inputs: int, reason: str) -> Detection:
    """The model's bands from ``wanted`` (``--bands``) or the preset's ``rgb``; refuses what is missing.
    ``n_inputs`` 0: identities only (:func:`identify`), no bands chosen."""
    if n_inputs == 0:
        return Detection(preset, named, (), reason)
    keys = wanted if wanted else list(preset.rgb)
    indexes = _select(named, keys, scene)
    if indexes is None:
        missing = [k for k in keys if not k.isdigit() and find(named, k) is None]
        raise InputError(
            f"no band {', '.join(missing)} in {Path(scene.paths[0]).name} ({preset.name}): its bands are {describe(named)}; "
            f"pass --bands, e.g. {example(scene, n_inputs)}"
        )
    if len(indexes) != n_inputs:
        raise InputError(f"the model takes {n_inputs} bands but {len(indexes)} were selected ({', '.join(keys)})")
    if wanted:
        reason += f"; bands {','.join(wanted)} from --bands"
    return Detection(preset, named, indexes, reason)


def sentinel2_offset(scene: Scene, scale: float) -> tuple[float, str]:
    """The Sentinel-2 L2A offset in scaled units and why, from facts only: BOA_ADD_OFFSET (or a STAC raster
    offset), the processing baseline, the acquisition date; refuses when none is known."""
    tags = dict(scene.tags)
    for k, v in tags.items():
        if "BOA_ADD_OFFSET" in k.upper() and (n := _number(v)) is not None:
            return n * scale, f"offset {v} DN from the metadata's {k}"
    off = _number(tags.get("stac:raster:offset", ""))
    if off is not None:
        return off, f"offset {off:g} from the STAC item's raster:bands"
    texts = scene.evidence
    for k, v in tags.items():
        m = re.fullmatch(r"\s*N?(\d{1,2})\.?(\d{2})\s*", v)  # 04.00, 4.00 or N0400
        if k.upper() in ("PROCESSING_BASELINE", "S2:PROCESSING_BASELINE") and m:
            return _by_baseline(float(f"{m.group(1)}.{m.group(2)}"), f"processing baseline {v} in the metadata ({k})", scale)
    for t in texts:
        m = re.search(r"MSIL2A_\d{8}T\d{6}_N(\d{2})(\d{2})_", t)
        if m:
            return _by_baseline(
                float(f"{m.group(1)}.{m.group(2)}"), f"processing baseline N{m.group(1)}{m.group(2)} in {_component(m, t)}", scale
            )
    for t in texts:
        m = re.search(r"(?:MSIL2A_|T\d\d[A-Z]{3}_|datetime=)(\d{4})-?(\d{2})-?(\d{2})T", t)
        if m:
            day = dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
            where = "the STAC item's datetime" if t.startswith("datetime=") else _component(m, t)
            after = day >= S2_BASELINE_04_DATE
            why = f"acquired {day} ({'on or after' if after else 'before'} {S2_BASELINE_04_DATE}, from {where}; no baseline given)"
            return (-1000 * scale, f"offset -1000 DN: {why}") if after else (0.0, f"no offset: {why}")
    raise InputError(
        "sentinel2-l2a: nothing says the processing baseline of this product (no BOA_ADD_OFFSET or PROCESSING_BASELINE in the "
        "metadata, no N04xx baseline or acquisition date in the product name), so the -1000 DN offset of baseline 04.00 "
        "cannot be decided: pass --sensor sentinel2-l2a-pb04 (from 2022-01-25) or --sensor sentinel2-l2a-legacy (before)"
    )


def _number(text: str) -> float | None:
    """``text`` as a finite float, None when it is not one (a malformed tag is not a fact)."""
    try:
        x = float(text)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


def _component(match: re.Match[str], text: str) -> str:
    """The path component (file or folder name) holding ``match``."""
    return found_in(match, text).split(" in ", 1)[1]


def _by_baseline(baseline: float, why: str, scale: float) -> tuple[float, str]:
    if baseline >= 4.0:
        return -1000 * scale, f"offset -1000 DN: {why} (>= 04.00)"
    return 0.0, f"no offset: {why} (< 04.00)"


def band_record(bands: tuple[Band, ...], sources: tuple[tuple[str, int], ...] = ()) -> list[dict[str, str | None]]:
    """Every band's identity and where it came from (and its file and band number), for output records."""
    where = [{"file": Path(p).name, "band": str(b)} for p, b in sources] if len(sources) == len(bands) else [{}] * len(bands)
    return [{"index": str(i + 1), **b.record(), **w} for i, (b, w) in enumerate(zip(bands, where, strict=True))]


__all__ = ["Detection", "band_record", "detect", "example", "family_of", "identify", "sentinel2_offset"]
