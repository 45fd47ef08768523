"""A Cloud Optimized GeoTIFF written tile by tile, from several threads, with its IFDs written last.

:class:`CogFile` writes a tiled, band-separate (PlanarConfiguration=2) GeoTIFF with internal overviews
in COG layout. Compressed tiles (:mod:`geodino.tiffcodec`) arrive in any order and go straight to their
place (``os.pwrite`` at offsets allocated under a lock); :meth:`CogFile.close` writes the header, GDAL's
ghost structural metadata and every IFD into space reserved at the start, so finishing is immediate.

File layout: header, ghost, reserved IFDs (main first, then overviews by decreasing size), one region per
overview level (smallest first) sized for its worst case, then the full-resolution tiles. Every tile is
``uint32 size | payload | last 4 bytes of payload`` (GDAL's BLOCK_LEADER / BLOCK_TRAILER); tiles never
written have offset and byte count 0 (GDAL reads them as nodata). GeoTIFF and GDAL tags (CRS, transform,
nodata, descriptions, metadata, colour table) come from :func:`template_tags`: a 1x1 GTiff written by GDAL.
"""

from __future__ import annotations

import os
import struct
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

from geodino.tiffcodec import compress_bound

#: A raw IFD entry: (TIFF type, count, value bytes, little-endian).
Entry = tuple[int, int, bytes]

DTYPES = ("float32", "float16", "uint8")
#: Bytes per value of each TIFF field type.
TYPE_SIZE = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8, 17: 8, 18: 8}
SHORT, LONG, LONG8 = 3, 4, 16
#: Tags copied from the template GTiff: GeoTIFF (scale, tiepoint, transformation, geokeys, doubles,
#: ascii), colour map, GDAL_METADATA, GDAL_NODATA.
TEMPLATE_TAGS = (320, 33550, 33922, 34264, 34735, 34736, 34737, 42112, 42113)
GHOST_BODY = b"LAYOUT=IFDS_BEFORE_DATA\nBLOCK_LEADER=SIZE_AS_UINT4\nBLOCK_TRAILER=LAST_4_BYTES_REPEATED\nKNOWN_INCOMPATIBLE_EDITION=NO\n "
GHOST = b"GDAL_STRUCTURAL_METADATA_SIZE=%06d bytes\n" % len(GHOST_BODY) + GHOST_BODY
#: Classic TIFF only while the worst case of the whole file stays below this.
CLASSIC_LIMIT = int(0.98 * 2**32)


def _align(n: int, to: int = 8) -> int:
    return -(-n // to) * to


def overview_factors(height: int, width: int, block: int = 128) -> list[int]:
    """Overview decimation factors 2, 4, ... until the smallest level fits in one block (GDAL's AUTO rule)."""
    factors, f = [], 2
    while max(height, width) / (f // 2) > block:
        factors.append(f)
        f *= 2
    return factors


@dataclass(frozen=True)
class CogLayout:
    """Shapes of a COG: level 0 ``(height, width)``, level i ``ceil(height / f_i), ceil(width / f_i)`` (GDAL's
    rule), ``block``-square tiles, ``count`` bands of ``dtype`` (float32, float16 or uint8). ``bigtiff``: None
    decides from the worst-case file size, True/False forces it."""

    height: int
    width: int
    count: int
    dtype: str
    block: int = 128
    factors: tuple[int, ...] = (2, 4)
    bigtiff: bool | None = None
    block_rows: int | None = None  # tile height (TIFF allows TileLength != TileWidth): default ``block``
    halving: bool = False  # tiles of level k are ``block >> k`` wide and ``block_rows >> k`` high (>= 16): a strip of
    # ``block`` columns holds whole tiles, and a level's staged block row is a quarter of the level below's

    def tile_width(self, level: int) -> int:
        """Tile width of ``level``."""
        return max(16, self.block >> level) if self.halving else self.block

    def tile_rows(self, level: int = 0) -> int:
        """Tile height of ``level`` in rows (with ``halving``: halved like the width, down to 16)."""
        rows = self.block_rows or self.block
        return max(16, rows >> level) if self.halving else rows

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype {self.dtype!r}: use one of {', '.join(DTYPES)}")
        if min(self.height, self.width, self.count, self.block, self.tile_rows()) < 1 or self.block % 16 or self.tile_rows() % 16:
            raise ValueError(f"invalid layout {self.height}x{self.width}x{self.count}, block {self.block} (a multiple of 16)")
        if any(f < 2 for f in self.factors) or list(self.factors) != sorted(set(self.factors)):
            raise ValueError(f"overview factors {self.factors} must be increasing and >= 2")

    @property
    def levels(self) -> int:
        """Number of levels, full resolution included."""
        return 1 + len(self.factors)

    @property
    def itemsize(self) -> int:
        """Bytes per sample."""
        return int(np.dtype(self.dtype).itemsize)

    def shape(self, level: int) -> tuple[int, int]:
        """``(height, width)`` of ``level`` (0 = full resolution)."""
        f = 1 if level == 0 else self.factors[level - 1]
        return -(-self.height // f), -(-self.width // f)

    def tiles(self, level: int) -> tuple[int, int]:
        """``(rows, columns)`` of tiles of ``level``, per band."""
        h, w = self.shape(level)
        return -(-h // self.tile_rows(level)), -(-w // self.tile_width(level))

    def ntiles(self, level: int) -> int:
        """Tiles of ``level``, all bands."""
        ty, tx = self.tiles(level)
        return self.count * ty * tx

    def worst_bytes(self, level: int) -> int:
        """Largest size the tiles of ``level`` can take on disk (compressed, with leader and trailer)."""
        return self.ntiles(level) * (compress_bound(self.tile_rows(level) * self.tile_width(level) * self.itemsize) + 8)

    def worst_file_bytes(self, big: bool) -> int:
        """Upper bound of the whole file's size, classic TIFF or BigTIFF (``big``)."""
        ifds = sum(_ifd_bound(len(TEMPLATE_TAGS) + 15, self.ntiles(lv), big) for lv in range(self.levels))
        return 16 + len(GHOST) + 8 + ifds + 2**20 + sum(self.worst_bytes(lv) for lv in range(self.levels))

    @property
    def is_bigtiff(self) -> bool:
        """BigTIFF when forced or when the worst case does not fit classic TIFF (4 GB) with a margin."""
        return self.bigtiff if self.bigtiff is not None else self.worst_file_bytes(False) >= CLASSIC_LIMIT


def _ifd_bound(entries: int, array: int, big: bool) -> int:
    """Rough upper bound of an IFD with ``entries`` tags and two ``array``-long offset/count arrays
    (only used to decide classic vs BigTIFF; the reserved space is measured exactly)."""
    return (20 * entries + 16 + 16 * array) if big else (12 * entries + 6 + 8 * array)


def _pack(fmt: str, values: Sequence[int] | np.ndarray) -> bytes:
    return np.asarray(values, dtype=fmt).tobytes()


def _short(*values: int) -> Entry:
    return SHORT, len(values), _pack("<u2", values)


def _long(value: int) -> Entry:
    return LONG, 1, _pack("<u4", [value])


def encode_ifd(entries: dict[int, Entry], at: int, big: bool, last: bool) -> bytes:
    """One IFD at file offset ``at`` (tags ascending) followed by its out-of-line values (8-byte aligned),
    padded to 8 bytes; unless ``last``, the next IFD is expected right after it."""
    tags = sorted(entries)
    head, inline = (8 + 20 * len(tags) + 8, 8) if big else (2 + 12 * len(tags) + 4, 4)
    out = bytearray(struct.pack("<Q", len(tags)) if big else struct.pack("<H", len(tags)))
    extra = bytearray()
    for tag in tags:
        typ, count, value = entries[tag]
        if len(value) <= inline:
            field = value.ljust(inline, b"\0")
        else:
            pos = _align(at + head + len(extra))
            extra += b"\0" * (pos - at - head - len(extra)) + value
            field = struct.pack("<Q" if big else "<I", pos)
        out += struct.pack("<HHQ" if big else "<HHI", tag, typ, count) + field
    end = _align(at + head + len(extra))
    out += struct.pack("<Q" if big else "<I", 0 if last else end)
    return bytes((out + extra).ljust(end - at, b"\0"))


def read_ifds(path: str | Path) -> list[dict[int, Entry]]:
    """Every IFD of a little-endian TIFF or BigTIFF at ``path``: ``[{tag: (type, count, value bytes)}]``."""
    with open(path, "rb") as f:
        head = f.read(16)
        if head[:2] != b"II":
            raise ValueError(f"{path}: not a little-endian TIFF")
        big = struct.unpack_from("<H", head, 2)[0] == 43
        off_fmt, n_fmt, esize, inline = ("<Q", "<Q", 20, 8) if big else ("<I", "<H", 12, 4)
        nxt = struct.unpack_from(off_fmt, head, 8 if big else 4)[0]
        ifds: list[dict[int, Entry]] = []
        while nxt:
            f.seek(nxt)
            nsize = struct.calcsize(n_fmt)
            (n,) = struct.unpack(n_fmt, f.read(nsize))
            raw = f.read(n * esize + struct.calcsize(off_fmt))
            ifd: dict[int, Entry] = {}
            for i in range(n):
                tag, typ, count = struct.unpack_from("<HHQ" if big else "<HHI", raw, i * esize)
                field = raw[i * esize + esize - inline : (i + 1) * esize]
                size = count * TYPE_SIZE.get(typ, 1)
                if size <= inline:
                    ifd[tag] = (typ, count, field[:size])
                else:
                    pos = f.tell()
                    f.seek(struct.unpack(off_fmt, field)[0])
                    ifd[tag] = (typ, count, f.read(size))
                    f.seek(pos)
            ifds.append(ifd)
            nxt = struct.unpack_from(off_fmt, raw, n * esize)[0]
        return ifds


def template_tags(
    crs_wkt: str | None,
    transform: Affine,
    count: int,
    dtype: str,
    nodata: float | None,
    descriptions: Sequence[str | None] | None,
    metadata: dict[str, str],
    colormap: dict[int, tuple[int, int, int, int]] | None = None,
    band_tags: Sequence[dict[str, str]] = (),
    units: Sequence[str] = (),
) -> dict[int, Entry]:
    """GeoTIFF and GDAL tags of a raster with these properties (``band_tags``: each band's metadata, e.g. statistics;
    ``units``: GDAL's ``UNITTYPE``s), as GDAL writes them in a 1x1 GTiff: ``{tag: Entry}`` of :data:`TEMPLATE_TAGS`."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    if colormap is not None and (count != 1 or dtype != "uint8"):
        raise ValueError("a colour table needs a single uint8 band")
    opts = {"NBITS": "16"} if dtype == "float16" else {}
    profile = dict(driver="GTiff", width=1, height=1, count=count, dtype="float32" if dtype == "float16" else dtype)
    with tempfile.TemporaryDirectory(prefix="geodino-tags-") as tmp:
        path = Path(tmp) / "template.tif"
        with rasterio.open(path, "w", **profile, crs=crs_wkt, transform=transform, nodata=nodata, **opts) as ds:
            for i, d in enumerate(descriptions or (), start=1):
                if d:
                    ds.set_band_description(i, d)
            if metadata:
                ds.update_tags(**metadata)
            for i, items in enumerate(band_tags, start=1):
                if items:
                    ds.update_tags(i, **items)
            if units:
                ds.units = tuple(units)
            if colormap:
                ds.write_colormap(1, colormap)
        first = read_ifds(path)[0]
    return {tag: first[tag] for tag in TEMPLATE_TAGS if tag in first}


class CogFile:
    """A COG at ``path`` with ``layout``'s shapes and ``tags`` (from :func:`template_tags`). :meth:`write`
    takes compressed tiles from any thread, in any order; :meth:`close` writes the IFDs. An exception inside
    ``with`` (or :meth:`abort`) removes the file."""

    def __init__(self, path: str | Path, layout: CogLayout, tags: dict[int, Entry], spare: int = 0) -> None:
        self.path = Path(path)
        self.layout = layout
        self.tags = dict(tags)
        self.big = layout.is_bigtiff
        self._lock = threading.Lock()
        shapes = [(layout.count, *layout.tiles(lv)) for lv in range(layout.levels)]
        self._offsets = [np.zeros(s, dtype=np.uint64) for s in shapes]
        self._counts = [np.zeros(s, dtype=np.uint64) for s in shapes]
        self.ifd_start = _align((16 if self.big else 8) + len(GHOST))
        self.ifd_bytes = len(self._ifds()) + spare  # ``spare``: room for tags that grow before close (the run's record)
        # region of each level: [start, end); overviews smallest first, full resolution last, open-ended
        self._next = [0] * layout.levels
        self._end = [0] * layout.levels
        pos = _align(self.ifd_start + self.ifd_bytes)
        for lv in range(layout.levels - 1, 0, -1):
            self._next[lv], self._end[lv] = pos, pos + layout.worst_bytes(lv)
            pos = self._end[lv]
        self._next[0], self._end[0] = pos, -1
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)

    def _entries(self, level: int) -> dict[int, Entry]:
        lay, n = self.layout, self.layout.count
        h, w = lay.shape(level)
        floating = lay.dtype != "uint8"
        colormap = 320 in self.tags
        e: dict[int, Entry] = {
            254: _long(1 if level else 0),
            256: _long(w),
            257: _long(h),
            258: _short(*[8 * lay.itemsize] * n),
            259: _short(50000),
            262: _short(3 if colormap else 1),
            277: _short(n),
            284: _short(2 if n > 1 else 1),
            317: _short(3 if floating else 2),
            322: _short(lay.tile_width(level)),
            323: _short(lay.tile_rows(level)),
            324: (
                LONG8 if self.big else LONG,
                self._offsets[level].size,
                _pack("<u8" if self.big else "<u4", self._offsets[level].ravel()),
            ),
            325: (LONG, self._counts[level].size, _pack("<u4", self._counts[level].ravel())),
            339: _short(*[3 if floating else 1] * n),
        }
        if n > 1:
            e[338] = _short(*[0] * (n - 1))
        if level == 0:
            e |= {tag: v for tag, v in self.tags.items() if tag != 42113}
        elif colormap:
            e[320] = self.tags[320]
        if 42113 in self.tags:
            e[42113] = self.tags[42113]
        return e

    def _ifds(self) -> bytes:
        """All IFDs and their values, chained, as they go at :attr:`ifd_start`."""
        out = b""
        for lv in range(self.layout.levels):
            out += encode_ifd(self._entries(lv), self.ifd_start + len(out), self.big, lv + 1 == self.layout.levels)
        return out

    def write(self, level: int, band: int, ty: int, tx: int, payload: bytes) -> None:
        """Write one compressed tile (``band`` 0-based; ``ty, tx`` tile row and column of ``level``). Thread-safe."""
        if self._fd is None:
            raise ValueError(f"{self.path}: closed")
        if not payload:
            raise ValueError("empty tile payload")
        size = len(payload) + 8
        with self._lock:
            if self._counts[level][band, ty, tx]:
                raise ValueError(f"tile level {level} band {band} ({ty}, {tx}) written twice")
            at = self._next[level]
            if self._end[level] >= 0 and at + size > self._end[level]:
                raise ValueError(f"level {level} overflows its reserved region: tile of {len(payload)} bytes beyond the worst case")
            self._next[level] = at + size
            self._offsets[level][band, ty, tx] = at + 4
            self._counts[level][band, ty, tx] = len(payload)
        _pwrite_all(self._fd, struct.pack("<I", len(payload)) + payload + payload[-4:], at)

    def write_tiles(self, level: int, ty: int, tiles: Sequence[tuple[int, int, bytes]]) -> None:
        """Write compressed tiles ``(band, tx, payload)`` of tile row ``ty`` of ``level`` side by side, in one
        system call (fewer lock and GIL hand-overs than :meth:`write` per tile). Thread-safe."""
        if self._fd is None:
            raise ValueError(f"{self.path}: closed")
        parts: list[bytes] = []
        for _, _, payload in tiles:
            if not payload:
                raise ValueError("empty tile payload")
            parts += [struct.pack("<I", len(payload)), payload, payload[-4:]]
        data = b"".join(parts)
        with self._lock:
            at = self._next[level]
            if self._end[level] >= 0 and at + len(data) > self._end[level]:
                raise ValueError(f"level {level} overflows its reserved region")
            pos = at
            for band, tx, payload in tiles:
                if self._counts[level][band, ty, tx]:
                    raise ValueError(f"tile level {level} band {band} ({ty}, {tx}) written twice")
                self._offsets[level][band, ty, tx] = pos + 4
                self._counts[level][band, ty, tx] = len(payload)
                pos += len(payload) + 8
            self._next[level] = at + len(data)
        _pwrite_all(self._fd, data, at)

    def close(self, tags: dict[int, Entry] | None = None) -> None:
        """Write header, ghost metadata and IFDs at the start of the file and close it."""
        if self._fd is None:
            return
        with self._lock:
            if tags is not None:  # the final tags (the run's record is known at the end)
                self.tags = dict(tags)
            ifds = self._ifds()
            if len(ifds) > self.ifd_bytes:
                raise RuntimeError(f"IFDs take {len(ifds)} bytes, {self.ifd_bytes} reserved")
            header = (
                struct.pack("<2sHHHQ", b"II", 43, 8, 0, self.ifd_start) if self.big else struct.pack("<2sHI", b"II", 42, self.ifd_start)
            )
            start = (header + GHOST).ljust(self.ifd_start, b"\0") + ifds
            fd, self._fd = self._fd, None
        try:
            _pwrite_all(fd, start, 0)
        finally:
            os.close(fd)

    def abort(self) -> None:
        """Close without finishing and remove the file."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> CogFile:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is not None:
            self.abort()
        else:
            try:
                self.close()
            except BaseException:
                self.abort()
                raise


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n
