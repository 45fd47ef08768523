"""Sensor presets: how a sensor's bands map to the model's RGB input and how its numbers scale.

Presets are YAML files in ``configs/sensors/`` (one per sensor; the directory can be replaced with
``$GEODINO_SENSORS``, and ``--sensor`` also accepts a path to a YAML file of the same form).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from geodino.errors import InputError
from geodino.scene import Scene, canonical_band

#: Order in which presets are tried when guessing (the others are used only when asked for).
GUESS_ORDER = ("rgb8", "naip-rgbn", "sentinel2-l2a", "landsat-c2l2", "generic")


@dataclass(frozen=True)
class SensorPreset:
    """One sensor: band layouts, which bands feed R, G, B, DN scaling and the stretch to [0, 1].

    ``offset`` is a float or ``"auto"`` (Sentinel-2 L2A: from metadata, else from the data).
    ``stretch`` is ``{"lo": x, "hi": y}`` (fixed, in scaled units) or ``{"percentiles": [p, q]}``.
    """

    name: str
    description: str
    rgb: tuple[str, ...]
    scale: float = 1.0
    offset: float | str = 0.0
    stretch: dict[str, object] = field(default_factory=lambda: {"percentiles": [2, 98]})
    bands: dict[int, tuple[str, ...]] = field(default_factory=dict)
    match_dtype: tuple[str, ...] = ()
    match_count: tuple[int, ...] = ()
    nodata: float | None = None
    guess: bool = True
    path: str = ""

    @property
    def percentiles(self) -> tuple[float, float] | None:
        p = self.stretch.get("percentiles")
        return (float(p[0]), float(p[1])) if p else None  # type: ignore[index]

    def names_for(self, scene: Scene) -> tuple[str, ...]:
        """The scene's band names, taking the preset's layout when the file names its bands by index only."""
        if all(n.isdigit() for n in scene.band_names) and scene.count in self.bands:
            return self.bands[scene.count]
        return scene.band_names

    def matches(self, scene: Scene) -> bool:
        """Whether this preset fits the scene's dtype, band count and band names."""
        if self.match_dtype and scene.dtype not in self.match_dtype:
            return False
        if self.match_count and scene.count not in self.match_count:
            return False
        names = {canonical_band(n) for n in self.names_for(scene)}
        return all(canonical_band(b) in names for b in self.rgb) or all(b.isdigit() and int(b) <= scene.count for b in self.rgb)


def sensors_dir() -> Path:
    """Where the preset YAML files live: ``$GEODINO_SENSORS``, the checkout's ``configs/sensors``
    (editable installs), else ``<prefix>/share/geodino/sensors`` (wheels)."""
    env = os.environ.get("GEODINO_SENSORS")
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parents[1] / "configs" / "sensors"
    return checkout if checkout.is_dir() else Path(sys.prefix) / "share" / "geodino" / "sensors"


def _parse(path: Path) -> SensorPreset:
    try:
        raw = yaml.safe_load(path.read_text())
        match = raw.get("match") or {}
        stretch = raw.get("stretch") or {"percentiles": [2, 98]}
        if not ({"lo", "hi"} <= set(stretch) or "percentiles" in stretch):
            raise ValueError("stretch needs lo and hi, or percentiles")
        offset = raw.get("offset", 0.0)
        return SensorPreset(
            name=str(raw["name"]),
            description=str(raw.get("description", "")),
            rgb=tuple(str(b) for b in raw["rgb"]),
            scale=float(raw.get("scale", 1.0)),
            offset=offset if offset == "auto" else float(offset),
            stretch=dict(stretch),
            bands={int(k): tuple(str(b) for b in v) for k, v in (raw.get("bands") or {}).items()},
            match_dtype=tuple(match.get("dtype", ())),
            match_count=tuple(int(c) for c in match.get("count", ())),
            nodata=None if raw.get("nodata") is None else float(raw["nodata"]),
            guess=bool(raw.get("guess", True)),
            path=str(path),
        )
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InputError(f"sensor preset {path} is not valid: {exc}") from None


def load_presets() -> dict[str, SensorPreset]:
    """All presets by name."""
    d = sensors_dir()
    presets = {p.name: p for p in (_parse(f) for f in sorted(d.glob("*.yaml")))}
    if not presets:
        raise InputError(f"no sensor presets found in {d} (set GEODINO_SENSORS to the configs/sensors folder)")
    return presets


def get_preset(name: str) -> SensorPreset:
    """A preset by name, or from a YAML file path."""
    if name.endswith((".yaml", ".yml")):
        return _parse(Path(name))
    presets = load_presets()
    if name not in presets:
        raise InputError(f"unknown sensor preset {name!r}; presets: {', '.join(sorted(presets))}")
    return presets[name]


def guess_preset(scene: Scene) -> SensorPreset | None:
    """The first preset in :data:`GUESS_ORDER` that matches the scene, else None."""
    presets = load_presets()
    for name in GUESS_ORDER:
        if name in presets and presets[name].matches(scene):
            return presets[name]
    for p in presets.values():
        if p.guess and p.name not in GUESS_ORDER and p.matches(scene):
            return p
    return None
