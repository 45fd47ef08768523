"""Sensor presets: how a sensor's bands map to the model's RGB input and how its numbers scale.

Presets are YAML files in ``configs/sensors/`` (one per sensor; the directory can be replaced with
``$GEODINO_SENSORS``, and ``--sensor`` also accepts a path to a YAML file of the same form).
"""

from __future__ import annotations

import importlib.metadata
import math
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import yaml

from geodino.bands import FAMILIES, Family
from geodino.errors import InputError


@dataclass(frozen=True)
class SensorPreset:
    """One sensor: what data it accepts, which bands feed R, G, B, DN scaling and the stretch to [0, 1].

    ``rgb`` names the model's input bands by common name (``red``) or band name. ``offset`` is a float or
    ``"auto"`` (Sentinel-2 L2A: from the product's facts, :func:`geodino.detect.sentinel2_offset`).
    ``stretch`` is ``{"lo": x, "hi": y}`` (fixed, in scaled units) or ``{"percentiles": [p, q]}``.
    ``products``/``metadata`` are the evidence (regular expressions) that singles the preset out;
    presets with none are chosen by data type and band identities alone.
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
    products: tuple[str, ...] = ()
    metadata: tuple[tuple[str, str], ...] = ()
    family: str | None = None
    standard_layout: bool = False  # the product defines its band order (NAIP): its layout applies whenever it is detected
    nodata: float | None = None
    guess: bool = True
    path: str = ""

    @property
    def percentiles(self) -> tuple[float, float] | None:
        p = cast("Sequence[float] | None", self.stretch.get("percentiles"))  # a list of 2 numbers (validated)
        return (float(p[0]), float(p[1])) if p else None

    def stretch_end(self, key: str) -> float:
        """``stretch["lo"]`` or ``stretch["hi"]`` of a fixed stretch, as a float."""
        return float(cast("float | str", self.stretch[key]))

    @property
    def detectable(self) -> bool:
        """Whether the preset declares evidence (product patterns or metadata) that singles it out."""
        return bool(self.products or self.metadata)

    @property
    def sensor_family(self) -> Family | None:
        return FAMILIES.get(self.family) if self.family else None

    def takes_dtype(self, dtype: str) -> bool:
        return not self.match_dtype or dtype in self.match_dtype

    def evidence(self, texts: tuple[str, ...]) -> str | None:
        """The first product pattern or metadata entry found in ``texts`` (paths, product id, ``KEY=value``), as words."""
        for pattern in self.products:
            for t in texts:
                m = re.search(pattern, t, re.IGNORECASE)
                if m:
                    return found_in(m, t)
        for key, pattern in self.metadata:
            for t in texts:
                k, _, v = t.partition("=")
                if k.upper() == key.upper() and re.search(pattern, v, re.IGNORECASE):
                    return f"metadata {k}={v}"
        return None


def found_in(match: re.Match[str], text: str) -> str:
    """``'LC08_L2SP' in LC08_L2SP_..._B4.TIF``: the match and the path component (or metadata entry) holding it."""
    if "=" in text and "/" not in text.partition("=")[0]:
        return f"{match.group(0).strip('_-./ ')!r} in metadata {text[:80]}"
    first = match.start() + len(match.group(0)) - len(match.group(0).lstrip("_-./ "))  # past a leading separator
    start = text.rfind("/", 0, first) + 1
    end = text.find("/", match.end())
    return f"{match.group(0).strip('_-./ ')!r} in {text[start : end if end >= 0 else None]}"


def sensors_dir() -> Path:
    """Where the preset YAML files live: ``$GEODINO_SENSORS``, the checkout's ``configs/sensors`` (editable
    installs), else ``share/geodino/sensors`` where the installed distribution put them (a wheel's data files: under
    ``sys.prefix``, or the ``--user``/``--prefix`` folder the wheel went to)."""
    env = os.environ.get("GEODINO_SENSORS")
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parents[1] / "configs" / "sensors"
    if checkout.is_dir():
        return checkout
    try:
        files = importlib.metadata.distribution("geodino").files or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for f in files:
        if f.suffix == ".yaml" and tuple(f.parts[-4:-1]) == ("share", "geodino", "sensors"):
            return Path(str(f.locate())).resolve().parent
    return Path(sys.prefix) / "share" / "geodino" / "sensors"


#: Keys a preset file may hold, and those of its ``match`` and ``stretch`` mappings.
PRESET_KEYS = ("name", "description", "family", "match", "bands", "standard_layout", "rgb", "scale", "offset", "nodata", "stretch", "guess")
MATCH_KEYS = ("dtype", "count", "products", "metadata")
STRETCH_KEYS = ("lo", "hi", "percentiles")


def _num(v: object) -> float | None:
    """``v`` as a float when it is a number (YAML 1.1 reads ``1e-4`` as text, so numeric text counts), else None."""
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        return None
    try:
        return float(v)
    except ValueError:
        return None


def _finite(v: object) -> bool:
    x = _num(v)
    return x is not None and math.isfinite(x)


def _names(v: object) -> bool:
    """A non-empty list of band names (1-based band indexes written as integers count as names)."""
    ok = lambda x: (isinstance(x, str) and bool(x.strip())) or (isinstance(x, int) and not isinstance(x, bool) and x > 0)  # noqa: E731
    return isinstance(v, list) and bool(v) and all(ok(x) for x in v)


def _listed(v: object) -> list[object]:
    return v if isinstance(v, list) else [v]


def _check_stretch(stretch: object, errors: list[str]) -> None:
    if not isinstance(stretch, dict):
        errors.append("stretch must be a mapping ({lo: x, hi: y} or {percentiles: [p, q]})")
        return
    errors.extend(f"unknown stretch key {k!r} (known: {', '.join(STRETCH_KEYS)})" for k in stretch if k not in STRETCH_KEYS)
    fixed = "lo" in stretch or "hi" in stretch
    if fixed and "percentiles" in stretch:
        errors.append("stretch takes lo and hi, or percentiles, not both")
    elif fixed:
        lo, hi = stretch.get("lo"), stretch.get("hi")
        if not (_finite(lo) and _finite(hi)):
            errors.append(f"stretch lo and hi must both be finite numbers, not {lo!r} and {hi!r}")
        elif not float(cast("float | str", lo)) < float(cast("float | str", hi)):  # numbers or numeric text (_finite)
            errors.append(f"stretch lo {lo} must be below hi {hi}")
    elif "percentiles" in stretch:
        pq = stretch["percentiles"]
        p, q = (_num(pq[0]), _num(pq[1])) if isinstance(pq, list) and len(pq) == 2 else (None, None)
        if p is None or q is None or not 0 <= p < q <= 100:  # NaN fails the comparison too
            errors.append(f"stretch percentiles must be [p, q] with 0 <= p < q <= 100, not {pq!r}")
    else:
        errors.append("stretch needs lo and hi, or percentiles")


def _problems(raw: object) -> list[str]:
    """Everything wrong with a preset file's parsed YAML (empty when it is valid)."""
    if not isinstance(raw, dict):
        return [f"it must hold a mapping of keys ({', '.join(PRESET_KEYS)}), not {type(raw).__name__}"]
    errors = [f"unknown key {k!r} (known: {', '.join(PRESET_KEYS)})" for k in raw if k not in PRESET_KEYS]
    if not (isinstance(raw.get("name"), str) and raw["name"].strip()):
        errors.append("name must be a non-empty string" if "name" in raw else "name is missing")
    if not isinstance(raw.get("description", ""), str):
        errors.append("description must be a string")
    if not _names(raw.get("rgb")):
        errors.append("rgb must be a non-empty list of band names (strings)" if "rgb" in raw else "rgb is missing")
    if not (_finite(raw.get("scale", 1.0)) and _num(raw.get("scale", 1.0)) != 0):
        errors.append(f"scale must be a finite non-zero number, not {raw.get('scale')!r}")
    if not (_finite(raw.get("offset", 0.0)) or raw.get("offset") == "auto"):
        errors.append(f"offset must be a finite number or 'auto', not {raw.get('offset')!r}")
    if raw.get("nodata") is not None and _num(raw["nodata"]) is None:
        errors.append(f"nodata must be a number or null, not {raw['nodata']!r}")
    if not isinstance(raw.get("standard_layout", False), bool):
        errors.append(f"standard_layout must be true or false, not {raw['standard_layout']!r}")
    if not isinstance(raw.get("guess", True), bool):
        errors.append(f"guess must be true or false, not {raw['guess']!r}")
    if raw.get("stretch") is not None:
        _check_stretch(raw["stretch"], errors)
    bands = raw.get("bands") or {}
    if not isinstance(bands, dict):
        errors.append("bands must map a band count to that many band names")
    for count, layout in bands.items() if isinstance(bands, dict) else ():
        if not (isinstance(count, int) and not isinstance(count, bool) and count > 0 and _names(layout) and len(layout) == count):
            errors.append(f"bands {count!r} must be a list of {count} band names")
    match = raw.get("match") or {}
    if not isinstance(match, dict):
        errors.append("match must be a mapping (dtype, count)")
        match = {}
    errors.extend(f"unknown match key {k!r} (known: {', '.join(MATCH_KEYS)})" for k in match if k not in MATCH_KEYS)
    if "dtype" in match and not all(isinstance(d, str) for d in _listed(match["dtype"])):
        errors.append(f"match dtype must be a data type name or a list of them, not {match['dtype']!r}")
    if "count" in match and not all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in _listed(match["count"])):
        errors.append(f"match count must be a band count or a list of them, not {match['count']!r}")
    if "products" in match and not all(isinstance(p, str) and _regex(p) for p in _listed(match["products"])):
        errors.append(f"match products must be regular expressions, not {match['products']!r}")
    meta = match.get("metadata", {})
    if not (isinstance(meta, dict) and all(isinstance(k, str) and isinstance(v, str) and _regex(v) for k, v in meta.items())):
        errors.append(f"match metadata must map metadata keys to regular expressions, not {meta!r}")
    if raw.get("family") is not None and raw["family"] not in FAMILIES:
        errors.append(f"family must be one of {', '.join(FAMILIES)}, not {raw['family']!r}")
    return errors


def _regex(p: str) -> bool:
    try:
        re.compile(p)
    except re.error:
        return False
    return True


def _parse(path: Path) -> SensorPreset:
    """Read and validate one preset file; every problem found is reported in one :class:`InputError` line."""
    try:
        raw = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # libyaml's when built with it
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InputError(f"sensor preset {path} is not valid: {' '.join(str(exc).split())}") from None
    errors = _problems(raw)
    if errors:
        raise InputError(f"sensor preset {path} is not valid: {'; '.join(' '.join(e.split()) for e in errors)}")
    match = raw.get("match") or {}
    offset = raw.get("offset", 0.0)
    stretch = raw.get("stretch") or {"percentiles": [2, 98]}
    return SensorPreset(
        name=raw["name"],
        description=raw.get("description", ""),
        rgb=tuple(str(b) for b in raw["rgb"]),
        scale=float(raw.get("scale", 1.0)),
        offset=offset if offset == "auto" else float(offset),
        stretch={k: ([float(x) for x in v] if k == "percentiles" else float(v)) for k, v in stretch.items()},
        bands={int(k): tuple(str(b) for b in v) for k, v in (raw.get("bands") or {}).items()},
        match_dtype=tuple(str(d) for d in _listed(match.get("dtype", []))),
        match_count=tuple(int(cast("int | str", c)) for c in _listed(match.get("count", []))),  # validated by _problems
        products=tuple(str(p) for p in _listed(match.get("products", []))),
        metadata=tuple((str(k), str(v)) for k, v in (match.get("metadata") or {}).items()),
        family=raw.get("family"),
        standard_layout=raw.get("standard_layout", False),
        nodata=None if raw.get("nodata") is None else float(raw["nodata"]),
        guess=raw.get("guess", True),
        path=str(path),
    )


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
