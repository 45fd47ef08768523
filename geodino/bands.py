"""Band identities: what each band of a scene *is* (red, nir, swir16, pan, ...), and how we know.

Values and pure functions only. A band has a ``name`` as the file gives it (``B04``, ``SR_B4``, ``red``,
``3``) and, where knowable, a STAC ``eo`` common name. The same name means different bands on
different sensors (Sentinel-2 ``B04``, Landsat 8/9 ``B4`` and Landsat 4-7 ``B3`` are all red), so
names are read through the name table of a sensor *family*, chosen from evidence (:mod:`geodino.detect`).
Order of evidence for a band's common name: STAC metadata, the family's name table, GDAL colour
interpretation and band descriptions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: STAC ``eo:common_name`` values (plus ``pan`` for panchromatic), in spectral order.
COMMON_NAMES = (
    "coastal", "blue", "green", "red", "yellow", "rededge", "rededge071", "rededge075", "rededge078",
    "nir", "nir08", "nir09", "cirrus", "swir16", "swir22", "lwir", "lwir11", "lwir12", "pan",
)  # fmt: skip

#: Band descriptions that state a common name (lower-cased), e.g. GDAL descriptions "Red", "NIR".
_DESCRIPTION_COMMON = {
    **{c: c for c in COMMON_NAMES},
    "near infrared": "nir", "near-infrared": "nir", "panchromatic": "pan",
}  # fmt: skip


@dataclass(frozen=True)
class Family:
    """Band naming of one sensor family: the name table, the style of its band names, and the tokens
    in file names, product ids or metadata that show the family (regular expressions, case-insensitive)."""

    name: str
    sensor: str  # in words, for messages
    table: dict[str, str]  # canonical band name -> common name
    name_style: str  # a raw band name written this family's way, e.g. B04 (Sentinel-2) vs B4 (Landsat)
    hints: tuple[str, ...]


_S2 = {"B1": "coastal", "B2": "blue", "B3": "green", "B4": "red", "B5": "rededge071", "B6": "rededge075", "B7": "rededge078",
       "B8": "nir", "B8A": "nir08", "B9": "nir09", "B10": "cirrus", "B11": "swir16", "B12": "swir22"}  # fmt: skip
_OLI = {"B1": "coastal", "B2": "blue", "B3": "green", "B4": "red", "B5": "nir08", "B6": "swir16", "B7": "swir22", "B8": "pan",
        "B9": "cirrus", "B10": "lwir11", "B11": "lwir12"}  # fmt: skip
_TM = {"B1": "blue", "B2": "green", "B3": "red", "B4": "nir08", "B5": "swir16", "B6": "lwir", "B7": "swir22", "B8": "pan"}

_SEP = r"(?:^|[^A-Za-z0-9])"  # a token boundary in a path or an id: hints are whole tokens ("oli" in "napoli" is not OLI)
_END = r"(?:$|[^A-Za-z0-9])"

FAMILIES = {
    f.name: f
    for f in (
        Family("sentinel2", "Sentinel-2 MSI", _S2, r"B(?:0\d|8A|1[0-2])",
               (rf"{_SEP}S2[A-D]_MSI", rf"{_SEP}S2[A-D]{_END}", rf"{_SEP}sentinel[-_ ]?2[A-D]?{_END}",
                rf"{_SEP}T\d\d[A-Z]{{3}}_\d{{8}}T\d{{6}}_B")),
        Family("landsat-oli", "Landsat 8/9 OLI", _OLI, r"(?:SR_|ST_)?B(?:[1-9]|1[01])",
               (rf"{_SEP}L[CO]0[89]_", rf"{_SEP}L[89]{_END}", rf"{_SEP}landsat[-_ ]?0?[89]{_END}", rf"{_SEP}OLI(?:[-_]TIRS)?{_END}")),
        Family("landsat-tm", "Landsat 4-7 TM/ETM+", _TM, r"(?:SR_|ST_)?B[1-8]",
               (rf"{_SEP}L[ETM]0[4-7]_", rf"{_SEP}L[457]{_END}", rf"{_SEP}landsat[-_ ]?0?[457]{_END}", rf"{_SEP}E?TM\+?{_END}")),
    )
}  # fmt: skip


def canonical_band(name: str) -> str:
    """Comparable band name: ``B04``/``b4``/``SR_B4`` -> ``B4``; ``Red`` -> ``red``; others lower-case."""
    n = name.strip()
    m = re.fullmatch(r"(?:SR_|ST_)?B0*(\d{1,2}A?)", n, re.IGNORECASE)
    if m:
        return "B" + m.group(1).upper()
    return n.lower()


def is_band_number_name(name: str) -> bool:
    """Whether ``name`` is a sensor band number such as ``B04``, ``B8A`` or ``SR_B4`` (meaningless without a family)."""
    return canonical_band(name).startswith("B") and canonical_band(name)[1:2].isdigit()


def fits_style(family: Family, name: str) -> bool:
    """Whether a band-number name is written in ``family``'s style (``B04`` is Sentinel-2's, ``B4`` Landsat's)."""
    return re.fullmatch(family.name_style, name.strip(), re.IGNORECASE) is not None and canonical_band(name) in family.table


def description_common(text: str | None) -> str | None:
    """The common name a band description or colour interpretation states, if any."""
    return _DESCRIPTION_COMMON.get((text or "").strip().lower())


@dataclass(frozen=True)
class Band:
    """One band of a scene: its name (as the file gives it), its common name if known, and where each came from."""

    name: str
    name_from: str  # "description", "colour interpretation", "file name", "STAC asset", "index", "preset <p> layout"
    common: str | None = None
    common_from: str = ""  # "STAC eo:bands", "<family> name table", "colour interpretation", "description", "--bands"

    def label(self) -> str:
        """``B04 (red, Sentinel-2 name table)`` for messages."""
        return f"{self.name} ({self.common}, {self.common_from})" if self.common else f"{self.name} (unknown)"

    def record(self) -> dict[str, str | None]:
        return {"name": self.name, "name_from": self.name_from, "common": self.common, "common_from": self.common_from}


def with_family(bands: tuple[Band, ...], family: Family | None) -> tuple[Band, ...]:
    """Bands with common names filled from ``family``'s name table; STAC common names are kept (they come first),
    colour interpretation and descriptions count only where the table says nothing."""
    if family is None:
        return bands
    out = []
    for b in bands:
        common = family.table.get(canonical_band(b.name)) if is_band_number_name(b.name) else None
        if common and b.common_from != "STAC eo:bands":
            out.append(Band(b.name, b.name_from, common, f"{family.sensor} name table"))
        else:
            out.append(b)
    return tuple(out)


def find(bands: tuple[Band, ...], wanted: str) -> int | None:
    """0-based index of the first band whose common name or name is ``wanted`` (first date of a multi-date stack)."""
    key = wanted.strip()
    for i, b in enumerate(bands):
        if b.common == key.lower():
            return i
    canon = canonical_band(key)
    for i, b in enumerate(bands):
        if canonical_band(b.name) == canon:
            return i
    if key.lower() in ("nir", "swir", "rededge", "lwir"):  # a broad name for the one narrow band of that kind (nir -> nir08)
        narrow = [i for i, b in enumerate(bands) if b.common and b.common.startswith(key.lower())]
        if len(set(bands[i].common for i in narrow)) == 1:
            return narrow[0]
    return None


def describe(bands: tuple[Band, ...]) -> str:
    """``1 B02 (blue, ...), 2 B03 (...)`` for messages."""
    return ", ".join(f"{i + 1} {b.label()}" if b.name != str(i + 1) else f"{i + 1} (unknown)" for i, b in enumerate(bands))
