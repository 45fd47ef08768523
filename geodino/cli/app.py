"""The Typer application and the error guard shared by every subcommand."""

from __future__ import annotations

import functools
import logging
import os
import signal
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar, cast

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn
from rich.text import Text

from geodino.errors import GeodinoError, Interrupted, Terminated
from geodino.outputs import COMMITTED

if TYPE_CHECKING:
    from geodino.estimate import Stages

app = typer.Typer(
    name="geodino",
    help="Georeferenced DINOv3 features and predictions for satellite and aerial scenes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# GDAL's own messages (e.g. libtiff's "_tiffWriteProc: File too large" once per block) go to stderr through
# GDAL's default handler (CPL_LOG sends them elsewhere; set it yourself to see them) or to Python's logging
# through rasterio; the CLI says what failed in one line instead.
os.environ.setdefault("CPL_LOG", os.devnull)
logging.getLogger("rasterio").addHandler(logging.NullHandler())


def _print_version(value: bool) -> None:
    if value:
        from geodino import __version__

        typer.echo(f"geodino {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(False, "--version", help="print geodino's version and exit", is_eager=True, callback=_print_version),
) -> None:
    """Georeferenced DINOv3 features and predictions for satellite and aerial scenes."""


console = Console(soft_wrap=True)  # paths and messages stay on one line when piped, not folded at 80 columns
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., object])


def _raise_terminated(signum: int, frame: object) -> None:
    """The first SIGINT/SIGTERM/SIGHUP unwinds the run; later ones are ignored so that the cleanup finishes."""
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, signal.SIG_IGN)
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated(signum)


_NOTES: list[str] = []


def print_notes(notes: Sequence[str]) -> None:
    """What geodino decided that the user should know (a fallback, a resampling, clipping): one line each on
    stderr once the work starts (the first tile) or the command succeeds; a refused command shows its error alone."""
    _NOTES.extend(n for n in notes if n not in _NOTES)


def flush_notes() -> None:
    while _NOTES:
        err_console.print(f"geodino: note: {_NOTES.pop(0)}", style="yellow", markup=False, highlight=False, soft_wrap=True)


def print_stages(stages: Stages, seconds: float) -> None:
    """``--profile``: seconds per stage of a streamed run, one line each, then the total and whether it was
    model-bound or I/O-bound (``encode``, ``canopy-height``, ``land-cover``)."""
    for name, secs, what in (
        ("read", stages.read, "waiting for tiles (read ahead in threads)"), ("model", stages.model, "the model"),
        ("blend", stages.blend, "blending, rows handed to the writer"),
        ("write", stages.write, "staging rows for the writer (compression overlaps)"),
        ("finish", stages.finish, "after the last tile's model call"),
    ):  # fmt: skip
        console.print(f"{name:<7}{secs:8.2f} s  {what}", markup=False, highlight=False)
    console.print(f"total  {seconds:8.2f} s  {stages.bound}", markup=False, highlight=False)


def error_line(message: str) -> None:
    """One line on stderr (newlines inside a message are folded into it)."""
    text = " ".join(str(message).split())
    err_console.print(f"geodino: error: {text}", markup=False, highlight=False, soft_wrap=True)


def guard(fn: F) -> F:
    """Turn a :class:`GeodinoError` into one line on stderr and exit code 2 (no traceback); SIGTERM and SIGHUP
    unwind like Ctrl-C (temporaries removed, old outputs untouched) and exit 128 + the signal number."""

    @functools.wraps(fn)
    def wrapper(*args: object, **kwargs: object) -> object:
        old = {s: signal.signal(s, _raise_terminated) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        COMMITTED.clear()
        _NOTES.clear()
        try:
            result = fn(*args, **kwargs)
            flush_notes()
            return result
        except Interrupted as exc:
            error_line(str(exc))
            raise typer.Exit(exc.exit_code) from None
        except GeodinoError as exc:
            error_line(str(exc))
            raise typer.Exit(2) from None
        except (KeyboardInterrupt, Terminated) as exc:
            signum = exc.signum if isinstance(exc, Terminated) else signal.SIGINT
            if COMMITTED:
                error_line(f"interrupted ({signal.Signals(signum).name}) after {', '.join(map(str, COMMITTED))} had been written complete")
            else:
                error_line(f"interrupted ({signal.Signals(signum).name}): nothing was written and existing outputs were left as they were")
            raise typer.Exit(128 + signum) from None
        finally:
            _NOTES.clear()
            for s, handler in old.items():
                signal.signal(s, handler)

    return cast("F", wrapper)  # functools.wraps keeps the signature typer reads


class RateColumn(ProgressColumn):
    """Tiles per second since the job started (batches finish several tiles at once, so rich's
    windowed speed would jump)."""

    def render(self, task: Task) -> Text:
        rate, unit = task.fields.get("rate"), task.fields.get("unit", "tiles")
        return Text(f"{rate:.2f} {unit}/s" if rate else f"- {unit}/s", style="progress.data.speed")


class ElapsedColumn(ProgressColumn):
    """Time since the job started (not since the first tile finished)."""

    def render(self, task: Task) -> Text:
        return Text(clock(task.fields.get("elapsed") or 0), style="progress.elapsed")


class EtaColumn(ProgressColumn):
    """Time left at the average rate so far."""

    def render(self, task: Task) -> Text:
        rate = task.fields.get("rate")
        if not rate or task.total is None:
            return Text("ETA -", style="progress.remaining")
        return Text(f"ETA {clock((task.total - task.completed) / rate)}", style="progress.remaining")


def clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


#: Seconds between progress lines when stderr is not a terminal (a log file, a pipe, a batch job).
LOG_EVERY = 10.0


class TileBar:
    """A rich progress bar on stderr (tiles, tiles/s, elapsed, ETA) that appears at the first tile, so
    errors raised while checking inputs stay one line. Call it as ``progress(done, total)``. When stderr is not a
    terminal, plain lines instead: one every :data:`LOG_EVERY` seconds and one at the end."""

    def __init__(self, label: str = "encoding", unit: str = "tiles") -> None:
        self.label, self.unit = label, unit
        self.bar: Progress | None = None
        self.start = time.perf_counter()
        self._logged = self.start
        self._started = False

    def __call__(self, done: int, total: int) -> None:
        if not self._started:
            flush_notes()  # the work has started: what geodino decided goes above the bar
            self._started = True
        if not err_console.is_terminal:
            self._line(done, total)
            return
        if self.bar is None:
            cols = (TextColumn(self.label), BarColumn(), MofNCompleteColumn(), TextColumn(self.unit), RateColumn(), ElapsedColumn())
            self.bar = Progress(*cols, EtaColumn(), console=err_console)
            self.bar.start()
            self.task = self.bar.add_task(self.label, total=total, rate=None, elapsed=0, unit=self.unit)
        elapsed = time.perf_counter() - self.start
        self.bar.update(self.task, completed=done, total=total, rate=done / max(elapsed, 1e-9), elapsed=elapsed)

    def _line(self, done: int, total: int) -> None:
        """``encoding 12/81 tiles, 3.40 tiles/s, 0:00:03, ETA 0:00:20`` every :data:`LOG_EVERY` s, and at the end."""
        now = time.perf_counter()
        if done < total and now - self._logged < LOG_EVERY:
            return
        self._logged, elapsed = now, now - self.start
        rate = done / max(elapsed, 1e-9)
        eta = f", ETA {clock((total - done) / rate)}" if done < total and rate > 0 else ""
        err_console.print(f"{self.label} {done}/{total} {self.unit}, {rate:.2f} {self.unit}/s, {clock(elapsed)}{eta}", highlight=False)

    def __enter__(self) -> TileBar:
        self.start = time.perf_counter()
        return self

    def __exit__(self, exc_type: object = None, *exc: object) -> None:
        if self.bar is not None:
            if exc_type is not None:  # a failed run: the error line stands alone (no final bar in a log either)
                self.bar.live.transient = True
            self.bar.stop()
