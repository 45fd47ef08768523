"""The run record on disk: how an output was made, as a COG's ``GEODINO_*`` tags and as Zarr attributes.

A record is a mapping of lower-case keys to JSON values (strings, numbers, booleans, null, lists, mappings).
Zarr attributes are JSON, so a store holds it as it is (:func:`record_attrs`); GeoTIFF tags hold text, so a
COG holds ``GEODINO_<KEY>`` = the value as JSON, bare for a string that JSON would not read back as
something else (:func:`record_tags`). :func:`record_from_tags` and :func:`record_from_attrs` read both back
to the same mapping, which is what ``geodino info``, :func:`geodino.open_features` and the STAC sidecar see.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np

#: prefix of the record's GeoTIFF tags
TAG_PREFIX = "GEODINO_"


def _plain(v: object) -> object:
    """Numpy scalars and arrays and other objects (paths) as JSON values."""
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)


def record_attrs(metadata: Mapping[str, object]) -> dict[str, object]:
    """The record as native JSON values (tuples as lists, numpy values as Python ones): Zarr attributes."""
    plain = json.loads(json.dumps(dict(metadata), default=_plain, allow_nan=True))
    assert isinstance(plain, dict)
    return plain


def _tag_text(v: object) -> str:
    """A value as tag text: a string as it is unless JSON reads it as something else, then quoted."""
    if isinstance(v, str):
        try:
            json.loads(v)
        except ValueError:
            return v
    return json.dumps(v, separators=(",", ":"), default=_plain)


def record_tags(metadata: Mapping[str, object]) -> dict[str, str]:
    """The record as GeoTIFF tags: ``GEODINO_<KEY>`` = tag text (see the module docstring)."""
    return {f"{TAG_PREFIX}{k.upper()}": _tag_text(v) for k, v in metadata.items()}


def _tag_value(text: str) -> object:
    try:
        return json.loads(text)
    except ValueError:
        return text


def record_from_tags(tags: Mapping[str, str]) -> dict[str, object]:
    """The record held by a GeoTIFF's ``GEODINO_*`` tags (other tags ignored)."""
    return {k.removeprefix(TAG_PREFIX).lower(): _tag_value(v) for k, v in tags.items() if k.startswith(TAG_PREFIX)}


def record_from_attrs(attrs: Mapping[str, object]) -> dict[str, object]:
    """The record held by Zarr attributes, minus the format's own (CF and GDAL) attributes.
    Stores written before records were native JSON held lists and mappings as JSON text: those are decoded."""
    out: dict[str, object] = {}
    for k, v in attrs.items():
        if k in FORMAT_ATTRS or k.startswith("_"):
            continue
        if isinstance(v, str) and v[:1] in "[{":
            v = _tag_value(v)
        out[k] = v
    return out


#: attributes the feature array carries for CF readers and GDAL, not part of the run's record
FORMAT_ATTRS = frozenset({"long_name", "units", "grid_mapping", "coordinates", "completion", "_CRS", "_FillValue"})
