"""The one output layer: every file or folder a run writes goes through an :class:`OutputSet`.

A run declares all its outputs up front (``{"features": OUT, "tokens": OUT.tokens.zarr}``) with its
inputs. :func:`check_targets` refuses, before any work: an output that is an input, two outputs on
one path, an existing output without ``overwrite``, a folder geodino did not write (never replaced),
``.``/``..``/an ancestor of the working folder, a missing or read-only folder, a name too long for
the temporaries beside it. Entering the set takes an exclusive lock per output
(:class:`~geodino.lock.OutputLock` on ``.<name>.geodino-lock``) and removes temporaries left by
dead runs. Each output is written under ``temp(role)`` in its final folder; :meth:`OutputSet.commit`
moves the old outputs aside, the new ones in, and only then deletes the old ones, with signals held
back; any failure before that leaves every old output exactly as it was.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import resource
import shutil
import signal
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from geodino.errors import GeodinoError, InputError, OutputError
from geodino.lock import OutputLock

#: longest output name (bytes): the temporaries beside it add a prefix and a suffix to it
MAX_NAME = 200
#: what marks a folder as written by geodino (besides a Zarr store with geodino's attributes)
MARKER = ".geodino"
_LOCK, _RUN = "lock", "run"
#: the role suffix of an output's STAC item sidecar (:func:`geodino.stacitem.with_items`)
ITEM_ROLE = "_item"
_DISK_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
#: outputs committed in this process (the CLI's interruption message must not say nothing was written)
COMMITTED: list[Path] = []
#: free bytes below which a failed write is put down to a full disk
LOW_SPACE = 1 << 20


@dataclass(frozen=True)
class Target:
    """One declared output: absolute ``path`` (a final symlink is the link itself), what it is (``role``)."""

    role: str
    path: Path

    @property
    def prefix(self) -> str:
        """Start of every name geodino puts beside this output (temporaries, lock, run folder)."""
        return f".{self.path.name}.geodino-"


def run_lock(out: Path) -> Path:
    """``.<name>.geodino-lock`` beside ``out``: the lock a run writing ``out`` holds (and a run reading it)."""
    return out.with_name(Target("", Path(out)).prefix + _LOCK)


def run_folder(out: Path) -> Path:
    """``.<name>.geodino-run`` beside ``out``: a resumable run's folder (kept across runs; not a temporary)."""
    return out.with_name(Target("", out).prefix + _RUN)


def absolute(path: str | Path) -> Path:
    """``path`` made absolute without resolving its last component (a symlink stays the link); its folder is
    resolved as the system does (``link/../x`` goes through the link), ``.`` and ``..`` as folders."""
    text = os.path.join(os.getcwd(), os.fspath(path))
    head, name = os.path.split(text.rstrip(os.sep) or os.sep)
    if name in ("", ".", ".."):
        return Path(os.path.realpath(text))
    return Path(os.path.realpath(head)) / name


def _local(path: str) -> str | None:
    """A local file path of an input (``file://`` URLs included); None for remote or GDAL virtual paths."""
    if path.startswith("file://"):
        return path[len("file://") :]
    return None if "://" in path or path.startswith("/vsi") else path


def _real(path: str | Path) -> str:
    return os.path.realpath(os.fspath(path))


def written_by_geodino(folder: Path) -> bool:
    """A folder geodino wrote: its marker file, or a Zarr store whose attributes hold geodino's record."""
    if (folder / MARKER).is_file():
        return True
    for name in (".zattrs", "zarr.json"):
        with contextlib.suppress(OSError, ValueError):
            attrs = json.loads((folder / name).read_text())
            attrs = attrs.get("attributes", attrs)
            if "version" in attrs and ("scene" in attrs or "exported_from" in attrs):
                return True
    return False


def foreign_raster(path: Path) -> bool:
    """An existing file GDAL reads as a raster that carries no ``GEODINO_*`` tags (someone else's data)."""
    import rasterio

    if not path.is_file():
        return False
    try:
        with rasterio.Env(CPL_LOG="/dev/null"), rasterio.open(path) as ds:
            return not any(k.startswith("GEODINO_") for k in ds.tags())
    except Exception:  # not a raster at all (JSON, a head file, a vector): not this rule's business
        return False


def _same(a: str | Path, b: str | Path) -> bool:
    if _real(a) == _real(b):
        return True
    with contextlib.suppress(OSError):
        return os.path.samefile(a, b)  # hard links
    return False


def check_targets(
    targets: Mapping[str, str | Path | None],
    inputs: Iterable[str | Path | None] = (),
    overwrite: bool = False,
    replaceable: Iterable[str] = (),
) -> list[Target]:
    """Validate every output of a run before any work; returns them as :class:`Target` values.

    ``targets``: role -> path (None: not written this run). ``inputs``: every file or folder the run reads.
    An existing raster without geodino's tags is never replaced, except for the ``replaceable`` roles
    (pictures geodino writes without tags, such as the demo's quicklook).
    """
    out = [Target(role, absolute(p)) for role, p in targets.items() if p is not None]
    replaceable = set(replaceable)
    local_inputs = [q for p in inputs if p is not None and (q := _local(str(p))) is not None]
    cwd = _real(os.getcwd())
    for i, t in enumerate(out):
        label = f"{t.path}" if t.role == out[0].role else f"{'STAC item' if t.role.endswith(ITEM_ROLE) else t.role + ' output'} {t.path}"
        if len(os.fsencode(t.path.name)) + len(t.path.suffix) > MAX_NAME:  # (the suffix is repeated in temporaries)
            raise InputError(
                f"output name {t.path.name[:40]}... is {len(os.fsencode(t.path.name))} bytes: "
                f"at most {MAX_NAME} leave room for the temporaries beside it"
            )
        for other in out[:i]:
            if _same(other.path, t.path):
                raise InputError(f"{t.path} is given twice as an output ({other.role} and {t.role})")
        for src in local_inputs:
            if _same(src, t.path):
                raise InputError(f"{label} is also an input: choose another output path (did you forget OUT?)")
            if os.path.exists(src) and _real(src).startswith(_real(t.path) + os.sep):
                raise InputError(f"{label} holds the input {src}: choose another output path")
            if os.path.isdir(src) and _real(t.path).startswith(_real(src) + os.sep):
                raise InputError(f"{label} is inside the input {src}: choose another output path")
        if cwd == _real(t.path) or cwd.startswith(_real(t.path).rstrip(os.sep) + os.sep):
            raise InputError(f"{label} is the working folder or one of its parents: choose another output path")
        exists = t.path.exists() or t.path.is_symlink()
        if exists and t.role not in replaceable and foreign_raster(t.path):
            raise InputError(
                f"{label} is an existing raster geodino did not write: did you forget OUT? (remove it yourself to reuse the name)"
            )
        if exists and t.path.is_dir() and not t.path.is_symlink() and not written_by_geodino(t.path):
            raise InputError(
                f"{label} is a folder geodino did not write: --overwrite replaces only geodino's own outputs; remove it yourself"
            )
        if exists and not overwrite:
            raise InputError(f"{label} exists: pass --overwrite to replace it")
        parent = t.path.parent
        if not parent.is_dir():
            raise InputError(f"output folder {parent} does not exist")
        if not os.access(parent, os.W_OK):
            raise InputError(f"output folder {parent} is not writable")
    return out


def remove_path(path: Path) -> None:
    """Remove a file, link or folder if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


def disk_error(exc: BaseException) -> OSError | None:
    """The disk-full / file-too-large error behind ``exc`` (its causes and contexts, GDAL's text included)."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _DISK_ERRNOS:
            return e
        text = str(e)
        for code in _DISK_ERRNOS:
            if os.strerror(code) in text or "Free disk space" in text:
                return OSError(code, os.strerror(code) if os.strerror(code) in text else os.strerror(errno.ENOSPC))
        e = e.__cause__ or e.__context__
    return None


class _RecentMessages(logging.Handler):
    """The last GDAL messages (rasterio logs them): a failed write's reason is only there."""

    def __init__(self, keep: int = 20) -> None:
        super().__init__(logging.WARNING)
        self.messages: deque[str] = deque(maxlen=keep)

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _from_io(exc: BaseException) -> bool:
    """An error raised by file I/O: an OSError, or one of GDAL's (rasterio), zarr's or numcodecs' errors."""
    return isinstance(exc, OSError) or type(exc).__module__.split(".")[0] in ("rasterio", "zarr", "numcodecs")


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold back SIGINT, SIGTERM and SIGHUP (delivered on exit) while outputs are moved into place."""
    sigs = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    try:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    except (ValueError, OSError):  # pragma: no cover  (not the main thread on some platforms)
        old = None
    try:
        yield
    finally:
        if old is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)


class OutputSet:
    """The outputs of one run: checked at construction, locked on ``with``, written as temporaries, committed together.

    ``targets``: role -> final path (the first role is the main output). ``temp(role)`` is where to write it.
    """

    def __init__(
        self,
        targets: Mapping[str, str | Path | None],
        inputs: Iterable[str | Path | None] = (),
        overwrite: bool = False,
        replaceable: Iterable[str] = (),
    ) -> None:
        self.targets = {t.role: t for t in check_targets(targets, inputs, overwrite, replaceable)}
        self.overwrite = overwrite
        self._locks: list[OutputLock] = []
        self._sources: dict[str, Path] = {}
        self._gdal = _RecentMessages()
        self.committed = False

    def path(self, role: str) -> Path:
        """The final path of ``role``."""
        return self.targets[role].path

    def __contains__(self, role: str) -> bool:
        return role in self.targets

    def temp(self, role: str) -> Path:
        """Where ``role`` is written before the commit (same folder, same suffix, this process's id)."""
        t = self.targets[role]
        return self._sources.get(role) or t.path.with_name(f"{t.prefix}{os.getpid()}-{role}{t.path.suffix}")

    def use(self, role: str, source: Path) -> None:
        """Commit ``source`` (written elsewhere, e.g. a resumable run's store) as ``role``."""
        self._sources[role] = source

    def lock_path(self, role: str) -> Path:
        """The lock of ``role``'s output; a STAC item sidecar is held by its raster's lock (one lock per raster)."""
        base = role.removesuffix(ITEM_ROLE)
        return run_lock(self.targets[base if base in self.targets else role].path)

    def __enter__(self) -> OutputSet:
        logging.getLogger("rasterio").addHandler(self._gdal)
        try:
            for lock in sorted({self.lock_path(role): self.path(role) for role in sorted(self.targets, reverse=True)}.items()):
                self._locks.append(OutputLock(*lock).acquire())
            for t in self.targets.values():
                remove_orphans(t)
        except BaseException:
            self._release()
            raise
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        logging.getLogger("rasterio").removeHandler(self._gdal)
        err = None
        if isinstance(exc, Exception) and not isinstance(exc, GeodinoError):
            err = disk_error(exc) or (self._disk_state() if _from_io(exc) else None)
        try:
            if not self.committed:
                for role in self.targets:
                    if role not in self._sources:
                        remove_path(self.temp(role))
                for t in self.targets.values():
                    remove_orphans(t)
        finally:
            self._release()
        if err is not None:
            main = next(iter(self.targets.values())).path
            raise OutputError(f"{err.strerror} writing {main} (disk full or file size limit); nothing was changed") from None

    def _disk_state(self) -> OSError | None:
        """The disk error behind a failed write that GDAL reports only as "Write failed": from GDAL's messages
        during the run, else by probing each output folder (a byte past the file-size limit, then 1 MiB)."""
        for message in reversed(self._gdal.messages):
            if (err := disk_error(Exception(message))) is not None:
                return err
        soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        for t in self.targets.values():
            probe = t.path.with_name(f"{t.prefix}{os.getpid()}-probe")
            try:
                fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                try:
                    if soft != resource.RLIM_INFINITY:
                        os.pwrite(fd, b"\0", soft)  # sparse: costs no space
                    os.posix_fallocate(fd, 0, LOW_SPACE)
                finally:
                    os.close(fd)
            except OSError as exc:
                if exc.errno in _DISK_ERRNOS:
                    return exc
            finally:
                probe.unlink(missing_ok=True)
        return None

    def _release(self) -> None:
        for lock in self._locks:
            lock.release()
        self._locks.clear()

    def commit(self, roles: Iterable[str] | None = None) -> dict[str, Path]:
        """Move every written temporary into place at once (all ``roles``, default those written). The old
        outputs are moved aside first and deleted only when every new one is in place. STAC item sidecars
        (``<role>_item`` targets, :mod:`geodino.stacitem`) are written first, from the rasters' temporaries."""
        if any(r.endswith(ITEM_ROLE) for r in self.targets):
            from geodino.stacitem import write_items

            write_items(self)
        roles = [r for r in (roles or self.targets) if self.temp(r).exists() or self.temp(r).is_symlink()]
        moved: list[tuple[Path, Path | None, bool]] = []  # (final, old moved aside or None, new moved in)
        with signals_held():
            try:
                for role in roles:
                    t = self.targets[role]
                    src = self.temp(role)
                    if src.is_dir():
                        (src / MARKER).write_text(json.dumps({"role": role, "name": t.path.name}))
                    old = None
                    if t.path.exists() or t.path.is_symlink():
                        old = t.path.with_name(f"{t.prefix}{os.getpid()}-old-{role}")
                        os.replace(t.path, old)
                    moved.append((t.path, old, False))
                    os.replace(src, t.path)
                    moved[-1] = (t.path, old, True)
            except BaseException as exc:
                for final, old, new_in in reversed(moved):
                    if new_in:
                        remove_path(final)
                    if old is not None:
                        os.replace(old, final)
                if isinstance(exc, OSError) and disk_error(exc) is None:
                    raise OutputError(
                        f"cannot move {moved[-1][0] if moved else 'the outputs'} into place ({exc.strerror}); nothing was changed"
                    ) from None
                raise
            for _, old, _ in moved:
                if old is not None:
                    remove_path(old)
        COMMITTED.extend(self.path(r) for r in roles)
        self.committed = True
        return {r: self.path(r) for r in roles}


def remove_orphans(target: Target) -> list[Path]:
    """Remove temporaries beside ``target`` left by runs that died (only call while holding its lock).

    An old output moved aside by a commit that was killed half-way is put back when nothing took its place."""
    removed = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(target.path.parent):
            rest = entry.name[len(target.prefix) :] if entry.name.startswith(target.prefix) else ""
            pid, _, what = rest.partition("-")
            if not pid.split(".", 1)[0].isdigit():
                continue
            p = Path(entry.path)
            if what.startswith("old-") and not (target.path.exists() or target.path.is_symlink()):
                os.replace(p, target.path)
                continue
            remove_path(p)
            removed.append(p)
    return removed
