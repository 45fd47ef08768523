"""``gdalinfo -json`` without the GDAL command line or Python bindings: the libgdal bundled in rasterio's wheel
called through ctypes (``GDALInfo`` is the library behind ``gdalinfo``), so tests see what GIS tools see."""

from __future__ import annotations

import ctypes
import json
from functools import cache
from pathlib import Path
from typing import Any

import rasterio


@cache
def _libgdal() -> ctypes.CDLL:
    """rasterio's own libgdal (already loaded by ``import rasterio``: the same library, not a second copy)."""
    libs = Path(rasterio.__file__).resolve().parent.parent / "rasterio.libs"
    found = sorted(libs.glob("libgdal*.so*"))
    if not found:
        raise RuntimeError(f"no libgdal in {libs}: rasterio is not the manylinux wheel")
    lib = ctypes.CDLL(str(found[0]))
    lib.GDALAllRegister.restype = None
    lib.GDALOpenEx.restype = ctypes.c_void_p
    lib.GDALOpenEx.argtypes = [ctypes.c_char_p, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    lib.GDALInfoOptionsNew.restype = ctypes.c_void_p
    lib.GDALInfoOptionsNew.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_void_p]
    lib.GDALInfo.restype = ctypes.c_void_p  # a char * that VSIFree releases
    lib.GDALInfo.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    lib.GDALInfoOptionsFree.restype = None
    lib.GDALInfoOptionsFree.argtypes = [ctypes.c_void_p]
    lib.VSIFree.restype = None
    lib.VSIFree.argtypes = [ctypes.c_void_p]
    lib.GDALClose.restype = None
    lib.GDALClose.argtypes = [ctypes.c_void_p]
    lib.GDALAllRegister()
    return lib


GDAL_OF_RASTER, GDAL_OF_READONLY, GDAL_OF_VERBOSE_ERROR = 0x02, 0x00, 0x40


def gdalinfo(path: str | Path, *args: str) -> dict[str, Any]:
    """``gdalinfo -json [args] path`` parsed: what GDAL (and QGIS) read from the file and its sidecars."""
    lib = _libgdal()
    ds = lib.GDALOpenEx(str(path).encode(), GDAL_OF_RASTER | GDAL_OF_READONLY | GDAL_OF_VERBOSE_ERROR, None, None, None)
    if not ds:
        raise OSError(f"GDAL cannot open {path}")
    argv = (ctypes.c_char_p * (len(args) + 2))(b"-json", *(a.encode() for a in args), None)
    opts = lib.GDALInfoOptionsNew(argv, None)
    try:
        text = lib.GDALInfo(ds, opts)
        try:
            return dict(json.loads(ctypes.string_at(text).decode()))
        finally:
            lib.VSIFree(text)
    finally:
        lib.GDALInfoOptionsFree(opts)
        lib.GDALClose(ds)
