"""Files beside a prediction COG that GIS tools read with it: ``OUT.tif.aux.xml`` and ``OUT.qml``.

- ``OUT.tif.aux.xml``: GDAL's PAM sidecar (the ``PAMDataset`` XML GDAL itself writes). A class raster's band
  holds its category names (``gdalinfo`` lists them; QGIS names the classes) and a thematic raster attribute
  table (value, class name, the value in the training labels, colour); a height raster's band holds its unit
  and statistics, the same as inside the COG. GDAL lets this file override what the COG holds, so every run
  writes it (a stale one would otherwise speak for the new raster).
- ``OUT.qml``: the QGIS style loaded with the raster (QGIS looks for ``<name>.qml`` beside ``<name>.tif``): a
  ``paletted`` renderer with the colour table's colours and the class names, or a ``singlebandpseudocolor``
  ramp over the height's minimum..maximum labelled in its unit.

Both are roles of the run's :class:`~geodino.outputs.OutputSet` (:func:`sidecar_targets`): refused when they
exist without ``--overwrite``, written at their temporaries, moved into place with the raster. This module
only makes their text (pure functions); :mod:`geodino.predict` writes them.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from geodino.bandstats import Statistics, statistics_tags

#: GDAL's RAT field types and usages (``GDALRATFieldType``, ``GDALRATFieldUsage``).
RAT_INTEGER, RAT_STRING = 0, 2
USAGE_GENERIC, USAGE_NAME, USAGE_MINMAX, USAGE_RED, USAGE_GREEN, USAGE_BLUE, USAGE_ALPHA = 0, 2, 5, 6, 7, 8, 9
#: A viridis-like ramp (position 0..1, colour) for continuous rasters.
RAMP = ((0.0, "#440154"), (0.25, "#3b528b"), (0.5, "#21918c"), (0.75, "#5ec962"), (1.0, "#fde725"))
Colours = dict[int, tuple[int, int, int, int]]


def sidecar_targets(out: str | Path) -> dict[str, Path]:
    """The sidecar roles of the prediction COG ``out``: ``aux`` (``OUT.tif.aux.xml``) and ``style`` (``OUT.qml``)."""
    out = Path(out)
    return {"aux": out.with_name(out.name + ".aux.xml"), "style": out.with_suffix(".qml")}


def _text(parent: ET.Element, tag: str, text: object, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    el.text = str(text)
    return el


def _xml(root: ET.Element) -> str:
    ET.indent(root, "  ")
    return ET.tostring(root, encoding="unicode") + "\n"


def class_pam(names: Sequence[str], colours: Colours, values: Sequence[object] | None = None) -> str:
    """``OUT.tif.aux.xml`` of a class raster: category names (pixel value ``i`` is ``names[i]``) and a thematic
    RAT with the columns value, class, label (``values``: the classes as the training labels gave them) and
    red/green/blue/alpha (``colours``, the COG's colour table)."""
    root = ET.Element("PAMDataset")
    band = ET.SubElement(root, "PAMRasterBand", band="1")
    cats = ET.SubElement(band, "CategoryNames")
    for name in names:
        _text(cats, "Category", name)
    rat = ET.SubElement(band, "GDALRasterAttributeTable", tableType="thematic")
    fields = [("value", RAT_INTEGER, USAGE_MINMAX), ("class", RAT_STRING, USAGE_NAME)]
    fields += [("label", RAT_STRING, USAGE_GENERIC)] if values is not None else []
    fields += [("red", RAT_INTEGER, USAGE_RED), ("green", RAT_INTEGER, USAGE_GREEN), ("blue", RAT_INTEGER, USAGE_BLUE)]
    fields += [("alpha", RAT_INTEGER, USAGE_ALPHA)]
    for i, (name, typ, usage) in enumerate(fields):
        defn = ET.SubElement(rat, "FieldDefn", index=str(i))
        for tag, text in (("Name", name), ("Type", typ), ("Usage", usage)):
            _text(defn, tag, text)
    for i, name in enumerate(names):
        row = ET.SubElement(rat, "Row", index=str(i))
        cells: list[object] = [i, name, *([values[i]] if values is not None else []), *colours[i]]
        for cell in cells:
            _text(row, "F", cell)
    return _xml(root)


def value_pam(units: str, stats: Statistics) -> str:
    """``OUT.tif.aux.xml`` of a one-band continuous raster: its unit and statistics (what the COG holds)."""
    root = ET.Element("PAMDataset")
    band = ET.SubElement(root, "PAMRasterBand", band="1")
    _text(band, "UnitType", units)
    meta = ET.SubElement(band, "Metadata")
    for key, value in statistics_tags(stats).items():
        _text(meta, "MDI", value, key=key)
    return _xml(root)


def _hex(rgb: Sequence[int]) -> str:
    return "#" + "".join(f"{int(c):02x}" for c in rgb[:3])


def _qgis(renderer: ET.Element) -> str:
    root = ET.Element("qgis", version="3.28.0", styleCategories="AllStyleCategories")
    pipe = ET.SubElement(root, "pipe")
    pipe.append(renderer)
    ET.SubElement(pipe, "brightnesscontrast", brightness="0", contrast="0", gamma="1")
    ET.SubElement(pipe, "huesaturation", saturation="0", grayscaleMode="0", colorizeOn="0")
    ET.SubElement(pipe, "rasterresampler", maxOversampling="2")
    _text(root, "blendMode", 0)
    return "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n" + _xml(root)


def _min_max_origin(parent: ET.Element, accuracy: str) -> None:
    origin = ET.SubElement(parent, "minMaxOrigin")
    for tag, text in (("limits", "None"), ("extent", "WholeRaster"), ("statAccuracy", accuracy)):
        _text(origin, tag, text)


def class_style(names: Sequence[str], colours: Colours) -> str:
    """``OUT.qml`` of a class raster: QGIS's paletted renderer, class ``i`` drawn in ``colours[i]`` and labelled
    ``names[i]`` in the legend (nodata, 255, is not listed: it stays transparent)."""
    r = ET.Element("rasterrenderer", type="paletted", band="1", opacity="1", alphaBand="-1", nodataColor="")
    ET.SubElement(r, "rasterTransparency")
    _min_max_origin(r, "Exact")
    palette = ET.SubElement(r, "colorPalette")
    for i, name in enumerate(names):
        rgba = colours[i]
        ET.SubElement(palette, "paletteEntry", value=str(i), color=_hex(rgba), alpha=str(rgba[3]), label=name)
    return _qgis(r)


def ramp_style(units: str, stats: Statistics) -> str:
    """``OUT.qml`` of a continuous one-band raster: QGIS's pseudocolour renderer, an interpolated ramp from the
    statistics' minimum to maximum (``0..1`` when the raster has no valid cell), labels in ``units``."""
    lo, hi = (stats.minimum, stats.maximum) if stats.minimum is not None and stats.maximum is not None else (0.0, 1.0)
    hi = hi if hi > lo else lo + 1.0
    r = ET.Element("rasterrenderer", type="singlebandpseudocolor", band="1", opacity="1", alphaBand="-1", nodataColor="")
    r.attrib |= {"classificationMin": repr(lo), "classificationMax": repr(hi)}
    ET.SubElement(r, "rasterTransparency")
    _min_max_origin(r, "Estimated" if stats.approximate else "Exact")
    shader = ET.SubElement(ET.SubElement(r, "rastershader"), "colorrampshader")
    shader.attrib |= {"colorRampType": "INTERPOLATED", "classificationMode": "1", "clip": "0"}
    shader.attrib |= {"minimumValue": repr(lo), "maximumValue": repr(hi), "labelPrecision": "1"}
    for at, colour in RAMP:
        value = lo + at * (hi - lo)
        ET.SubElement(shader, "item", value=repr(value), color=colour, alpha="255", label=f"{value:.1f} {units}")
    return _qgis(r)
