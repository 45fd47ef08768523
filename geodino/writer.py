"""Rasters on disk: written during the run (features: a stream) or through a temporary GeoTIFF, moved into place.

Rows arrive from the stitcher in order. Features without a projection go to a stream
(:mod:`geodino.streams`): staged in the caller's thread, compressed by the stream's pool into the final COG
or Zarr as they come, finished when the last rows are. Everything else (PCA projections, prediction
rasters with colour tables or ``--resolution``) goes to a tiled temporary GeoTIFF beside the output
through a writer thread (a bounded queue of :data:`WRITE_AHEAD` row blocks), and :meth:`FeatureWriter.finish`
projects and writes the final format with GDAL. Either way the result is at ``dest``, a temporary of the
run's :class:`~geodino.outputs.OutputSet`, which moves it into place with the run's other outputs;
:meth:`FeatureWriter.abort` (or any exception inside ``with``) removes everything written. Nodata is
NaN. Every output carries the run's metadata (tags / attrs).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import rasterio
import rasterio.shutil
from odc.geo.geobox import GeoBox
from rasterio.enums import Resampling

from geodino.bandstats import BandStats
from geodino.choices import DTYPES, FEATURE_DTYPES, FORMATS
from geodino.cogfile import overview_factors
from geodino.errors import InputError
from geodino.outputs import remove_path
from geodino.record import record_tags
from geodino.steps import step
from geodino.streams import open_stream
from geodino.tiling import grid_crs
from geodino.zarrstore import chunks_of, feature_dataset, seal_store

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

#: GDAL block cache while finishing: bounded so memory does not grow with the scene.
GDAL_CACHE_MB = 64
#: ``project(block (rows, cols, D)) -> (rows, cols, K)`` applied while finishing (PCA).
Projection = Callable[[np.ndarray], np.ndarray]


BLOCK = 128
NODATA_CLASS = 255
#: Row blocks waiting for the writer thread, at most (then the stitcher waits: back-pressure, not buffering).
WRITE_AHEAD = 1


#: What a float16 COG holds, in its record: GDAL before 3.11 has no Float16 type and shows these as Float32.
HALF_FLOAT_COG = "IEEE half floats (BitsPerSample 16, SampleFormat IEEEFP): GDAL before 3.11 reads them as Float32, NBITS=16, exactly"
#: What an output's name says it is.
EXTENSIONS = {".tif": "cog", ".tiff": "cog", ".zarr": "zarr"}


def named_format(out: str | Path) -> str | None:
    """The format ``out``'s name says (:data:`EXTENSIONS`), or None."""
    return EXTENSIONS.get(Path(out).suffix.lower())


def output_format(out: str | Path, fmt: str | None) -> str:
    """The format of the output ``out``: ``fmt`` (``cog`` or ``zarr``), else the one its extension names (``.tif``,
    ``.tiff``: COG; ``.zarr``: Zarr). A name that says the other format is refused (a GeoTIFF named ``.zarr`` opens
    nowhere), and so is a name that says none when ``fmt`` is not given."""
    path, named = Path(out), named_format(out)
    if fmt is None:
        if named is None:
            raise InputError(f"{path.name}: name the output .tif (a COG) or .zarr (a Zarr store), or give --format cog|zarr")
        return named
    if fmt in FORMATS and named is not None and named != fmt:
        want = ".tif" if fmt == "cog" else ".zarr"
        raise InputError(f"--format {fmt} but the output is named {path.name}: name it {path.stem}{want}, or drop --format")
    return fmt


def check_cog_name(out: str | Path) -> None:
    """Refuse a COG output named as a Zarr store (it would open nowhere)."""
    path = Path(out)
    if named_format(path) == "zarr":
        raise InputError(f"{path.name}: this output is a GeoTIFF (COG): name it {path.stem}.tif")


def check_format(fmt: str | None, dtype: str) -> None:
    """Refuse an unknown format or a feature dtype other than float32/float16 (features never go through uint8);
    ``fmt`` None: decided later from the output's name (:func:`output_format`)."""
    if fmt is not None and fmt not in FORMATS:
        raise InputError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")
    if dtype not in FEATURE_DTYPES:
        raise InputError(f"--dtype {dtype!r}: use float32 or float16 (features are not integers)")


class FeatureWriter:
    """Receives finished rows ``(rows, cols, D)`` and writes the finished raster at ``dest``.

    ``dest`` is a temporary of an :class:`~geodino.outputs.OutputSet` (which moves it into place); the
    writer's own scratch files are named after it, in its folder, and removed by :meth:`finish`/:meth:`abort`.
    ``statistics``: gather the statistics of the rows as written (False where they will be projected: the
    projection gathers its own; a Zarr store keeps none).
    """

    def __init__(
        self,
        dest: str | Path,
        geobox: GeoBox,
        dim: int,
        fmt: str = "cog",
        dtype: str = "float32",
        stream: Sequence[str] | None = None,
        statistics: bool = True,
    ) -> None:
        if fmt not in FORMATS or dtype not in DTYPES:
            raise InputError(f"cannot write {fmt} rasters of {dtype}")
        self.out = Path(dest)
        self.geobox, self.dim, self.fmt, self.dtype = geobox, dim, fmt, dtype
        self.classes = dtype == "uint8"  # class rasters: nodata 255, nearest/mode resampling
        self.disk_dtype = "uint8" if self.classes else "float32"
        self.nodata = NODATA_CLASS if self.classes else float("nan")
        self.tmp_rows = self.out.with_name(self.out.name + ".rows.tif")
        self.tmp_proj = self.out.with_name(self.out.name + ".proj.tif")
        self.tmp_out = self.out
        self._extra: list[Path] = []
        # statistics of the rows as written (the temporary's path; a projection or a coarser COG gathers its own)
        self.stats = BandStats(dim, NODATA_CLASS if self.classes else None)
        self._gather = statistics and fmt == "cog"
        # ``stream``: the band names of features written during the run (no temporary, no pass after the run)
        self._stream = open_stream(self.out, geobox, dim, fmt, dtype, stream) if stream else None
        self.strip_width = self._stream.strip_width if self._stream is not None else None  # a wide scene in column strips
        self._rows = self._open_rows(self.tmp_rows, dim) if self._stream is None else None
        self._queue: queue.Queue[tuple[int, np.ndarray] | None] = queue.Queue(maxsize=WRITE_AHEAD)
        self._error: BaseException | None = None
        self.busy = 0.0  # seconds the writer thread spent writing
        self._thread = threading.Thread(target=self._drain, name="geodino-writer", daemon=True)
        if self._stream is None:  # a stream stages rows in the caller's thread and compresses them in its own pool
            self._thread.start()

    def _drain(self) -> None:
        """The writer thread: write queued row blocks in order until ``None``; keep the first error for the caller."""
        while (item := self._queue.get()) is not None:
            if self._error is None:
                t0 = time.perf_counter()
                try:
                    self._write_now(*item)
                except BaseException as exc:  # raised again in the caller's thread (write_rows, finish)
                    self._error = exc
                self.busy += time.perf_counter() - t0

    def _stop(self) -> None:
        """Wait for every queued block to be written, stop the thread, close the temporary; raise a write error."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if self._rows is not None:
            self._rows.close()
        if self._error is not None:
            raise self._error

    def _open_rows(self, path: Path, count: int) -> rasterio.io.DatasetWriter:
        h, w = self.geobox.shape.yx
        return rasterio.open(
            path, "w", driver="GTiff", height=h, width=w, count=count, dtype=self.disk_dtype, crs=grid_crs(self.geobox).to_wkt(),
            transform=self.geobox.affine, nodata=self.nodata, tiled=True, blockxsize=BLOCK, blockysize=BLOCK,
            interleave="band", BIGTIFF="IF_SAFER",
        )  # fmt: skip

    def write_rows(self, row0: int, block: np.ndarray, col0: int = 0) -> None:
        """Write feature rows ``[row0, row0 + rows)``, ``block`` ``(rows, cols, D)`` float32 (only read during the call:
        a stream stages it at once, the temporary GeoTIFF's writer thread gets a copy); ``col0``: a stream's column
        strip (the rows of a strip come top to bottom, strips left to right). A write error of an earlier block is
        raised here."""
        if self._error is not None:
            raise self._error
        if self._stream is not None:  # staged here (a copy into the block row); compression runs in the stream's pool
            t0 = time.perf_counter()
            self._stream.push(block.transpose(2, 0, 1), col0)  # band-major (D, rows, cols), as the stitcher holds it
            self.busy += time.perf_counter() - t0
            return
        if col0:
            raise ValueError("column strips are written by streams only")
        self._queue.put((row0, np.array(block)))  # np.array keeps the memory order: a band-major copy stays band-major

    def _write_now(self, row0: int, block: np.ndarray) -> None:
        assert self._rows is not None
        rows, cols, _ = block.shape
        data = np.ascontiguousarray(self._round(block).transpose(2, 0, 1))
        self._rows.write(data, window=((row0, row0 + rows), (0, cols)))
        if self._gather:
            self.stats.add(data)

    def _round(self, block: np.ndarray) -> np.ndarray:
        """float32, rounded to nearest float16 when writing half floats (GDAL's NBITS=16 would truncate)."""
        if self.dtype == "float16":
            return block.astype(np.float16).astype(np.float32)
        return block.astype(self.disk_dtype, copy=False)

    def _project(self, project: Projection, k: int) -> Path:
        self._stop()
        h, _ = self.geobox.shape.yx
        self.stats = BandStats(k)
        with rasterio.open(self.tmp_rows) as src, self._open_rows(self.tmp_proj, k) as dst:
            for r0 in range(0, h, 128):
                win = ((r0, min(r0 + 128, h)), (0, src.width))
                block = src.read(window=win).transpose(1, 2, 0)
                data = np.ascontiguousarray(self._round(project(block)).transpose(2, 0, 1))
                dst.write(data, window=win)
                self.stats.add(data)
        return self.tmp_proj

    def finish(
        self,
        metadata: dict[str, object],
        band_names: Sequence[str],
        project: Projection | None = None,
        colormap: dict[int, tuple[int, int, int, int]] | None = None,
        resolution: float | None = None,
        units: Sequence[str] = (),
    ) -> Path:
        """Write the final COG or Zarr at ``dest`` with ``metadata``, band names and an optional colour table.
        ``resolution`` (COG only): resample to that coarser pixel size by area mean. A COG carries the statistics of
        every band (:attr:`stats`, GDAL's ``STATISTICS_*`` items) and ``units`` (GDAL's unit type, e.g. ``m``)."""
        if self._stream is not None:
            if project is not None or colormap or resolution or units:
                raise ValueError("a streamed feature raster is written as it comes: no projection, colour table or resampling")
            self._stop()
            self._stream.finish(metadata, record_tags(metadata), band_names)
            return self.out
        if project is not None:
            src = self._project(project, len(band_names))
        else:
            self._stop()
            src = self.tmp_rows
        with rasterio.open(src, "r+") as ds:
            ds.descriptions = tuple(band_names)
            ds.update_tags(**record_tags(metadata))
            if colormap:
                ds.write_colormap(1, colormap)
            if units:
                ds.units = tuple(units)
            if self.fmt == "cog" and not resolution:
                self._set_stats(ds)
        with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), step(log, "finishing the %s of %d bands", self.fmt.upper(), self.dim):
            if self.fmt == "cog" and resolution:
                self._to_coarse_cog(src, resolution)
            elif self.fmt == "cog":
                self._to_cog(src)
            else:
                self._to_zarr(src, metadata, band_names)
        self._cleanup(keep=self.out)
        return self.out

    def _to_cog(self, src: Path) -> None:
        # Overviews are built on the band-interleaved temporary file (0.1 s for 256x256x384) and reused:
        # GDAL's COG driver building them from a many-band raster itself took ~10 s.
        factors = overview_factors(*self.geobox.shape.yx, BLOCK)
        if factors:
            with rasterio.open(src, "r+") as ds:
                ds.build_overviews(factors, Resampling.mode if self.classes else Resampling.average)
        opts = self._cog_options()
        opts["OVERVIEWS"] = "FORCE_USE_EXISTING" if factors else "NONE"
        rasterio.shutil.copy(src, self.tmp_out, driver="COG", **opts)

    def _cog_options(self) -> dict[str, str]:
        opts = {"COMPRESS": "ZSTD", "LEVEL": "1", "PREDICTOR": "2" if self.classes else "3", "BLOCKSIZE": str(BLOCK)}
        opts |= {"RESAMPLING": "MODE" if self.classes else "AVERAGE", "BIGTIFF": "IF_SAFER", "NUM_THREADS": "ALL_CPUS"}
        if self.dtype == "float16":
            opts["NBITS"] = "16"  # half floats in a Float32 GeoTIFF: GDAL and QGIS read them as float32
        return opts

    def _to_coarse_cog(self, src: Path, resolution: float) -> None:
        """Area-mean (class rasters: mode) resampling to ``resolution`` map units, same CRS and origin."""
        from affine import Affine
        from rasterio.vrt import WarpedVRT

        a = self.geobox.affine
        if resolution < abs(a.a) or resolution < abs(a.e):
            raise InputError(f"--resolution {resolution:g} is finer than the scene's pixels ({abs(a.a):g} x {abs(a.e):g})")
        h, w = self.geobox.shape.yx
        width, height = max(1, round(w * abs(a.a) / resolution)), max(1, round(h * abs(a.e) / resolution))
        transform = Affine(resolution, 0.0, a.c, 0.0, -resolution, a.f)
        method = Resampling.mode if self.classes else Resampling.average
        coarse = self.tmp_proj if src != self.tmp_proj else self.tmp_rows.with_suffix(".coarse.tif")
        self._extra.append(coarse)
        with rasterio.open(src) as ds, WarpedVRT(ds, crs=ds.crs, transform=transform, width=width, height=height, resampling=method) as vrt:
            rasterio.shutil.copy(vrt, coarse, driver="GTiff", TILED="YES", BLOCKXSIZE=str(BLOCK), BLOCKYSIZE=str(BLOCK))
            descriptions, tags = ds.descriptions, ds.tags()
            units = ds.units
        with rasterio.open(coarse, "r+") as out:  # the warp carries neither band descriptions nor tags
            out.descriptions = descriptions
            out.update_tags(**tags)
            out.units = units
            self.stats = BandStats(out.count, out.nodata if self.classes else None)  # of the coarser raster: one read of it
            for _, win in out.block_windows(1):
                self.stats.add(out.read(window=win))
            self._set_stats(out)
        rasterio.shutil.copy(coarse, self.tmp_out, driver="COG", **self._cog_options(), OVERVIEWS="AUTO")

    def _set_stats(self, ds: rasterio.io.DatasetWriter) -> None:
        """Write :attr:`stats` as each band's GDAL statistics items (the COG driver copies them)."""
        for b, items in enumerate(self.stats.tags(), start=1):
            if items:
                ds.update_tags(b, **items)

    def _to_zarr(self, src: Path, metadata: dict[str, object], band_names: Sequence[str]) -> None:
        import xarray as xr

        chunks = dict(zip(("band", "y", "x"), chunks_of(len(band_names), BLOCK, BLOCK), strict=True))
        data = xr.open_dataarray(src, engine="rasterio", chunks=chunks).data.astype(self.dtype)
        ds = feature_dataset(data, self.geobox, band_names, metadata)
        ds.to_zarr(self.tmp_out, mode="w", consolidated=True, zarr_format=2)
        seal_store(self.tmp_out)

    def _cleanup(self, keep: Path | None = None) -> None:
        for p in (self.tmp_rows, self.tmp_proj, self.tmp_out, *self._extra):
            if p != keep:
                remove_path(p)

    def abort(self) -> None:
        """Close and delete everything written, ``dest`` included."""
        self._error = self._error or InputError("aborted")  # the thread skips what is still queued
        try:
            self._stop()
        except BaseException:
            pass  # the run's own error is what the caller reports
        finally:
            if self._stream is not None:
                self._stream.abort()
            self._cleanup()

    def __enter__(self) -> FeatureWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is not None:
            self.abort()
