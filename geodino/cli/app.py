"""The Typer application, the error guard shared by every subcommand, logging and progress on stderr.

The library logs (``logging.getLogger(__name__)``, long steps through :mod:`geodino.steps`) and reports tiles and
epochs through callbacks; this module alone configures logging (``-v``/``-q``) and renders progress (:class:`TileBar`,
:class:`LogLines`).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, cast

import typer
import typer.core
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn
from rich.text import Text

from geodino import steps
from geodino.errors import GeodinoError, Interrupted, Terminated
from geodino.outputs import COMMITTED

if TYPE_CHECKING:
    from geodino.estimate import Stages


def _click_exceptions() -> ModuleType:
    """The exceptions of the click typer runs on: its own copy (recent typer vendors click), else click itself."""
    try:
        return importlib.import_module("typer._click.exceptions")
    except ImportError:  # pragma: no cover  (an older typer)
        return importlib.import_module("click.exceptions")


_click = _click_exceptions()


@contextlib.contextmanager
def _usage_errors() -> Iterator[None]:
    """A usage error (unknown option or command, a value that is not one of the choices, a missing argument) as one
    line and its exit code (2), instead of click's usage text and box; ``geodino`` alone still prints the help."""
    try:
        yield
    except _click.NoArgsIsHelpError:
        raise
    except _click.ClickException as exc:
        ctx = getattr(exc, "ctx", None)
        error_line(exc.format_message() + (f" (see {ctx.command_path} --help)" if ctx is not None else ""))
        raise typer.Exit(exc.exit_code) from None


class Commands(typer.core.TyperGroup):
    """geodino's command group: usage errors are one line (:func:`_usage_errors`), while parsing the group's options
    and the subcommand's."""

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        with _usage_errors():
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: Any) -> Any:
        with _usage_errors():
            return super().invoke(ctx)


app = typer.Typer(
    name="geodino",
    help="Georeferenced DINOv3 features and predictions for satellite and aerial scenes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    cls=Commands,
)
#: The environment variable a shell's completion script sets (``geodino --show-completion`` prints the script).
COMPLETE_VAR = "_GEODINO_COMPLETE"
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
    version: Annotated[
        bool, typer.Option("--version", help="print geodino's version and exit", is_eager=True, callback=_print_version)
    ] = False,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="more log lines: -v what each step does, -vv debug")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress, notes or warnings on stderr: errors and results only")] = False,
) -> None:
    """Georeferenced DINOv3 features and predictions for satellite and aerial scenes."""
    configure_logging(verbose - quiet)


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
        note = _NOTES.pop(0)
        if _verbosity >= 0:
            err_console.print(f"geodino: note: {note}", style="yellow", markup=False, highlight=False, soft_wrap=True)


def warn(message: str) -> None:
    """A warning from a run (e.g. random weights) on stderr, unless ``-q``."""
    if _verbosity >= 0:
        err_console.print(f"geodino: {message}", style="yellow", markup=False, highlight=False, soft_wrap=True)


# --- logging: -v/-q, and long steps as lines ------------------------------------------------------------

#: Seconds a step (:mod:`geodino.steps`) runs before the command line says so, at the default verbosity on a terminal
#: (in a log, :data:`LOG_EVERY`, like the tile lines: a step that fails sooner leaves its error line alone).
STEP_AFTER = 3.0
_verbosity = 0  # -v: +1 each, -q: -1


def configure_logging(verbosity: int) -> None:
    """The ``geodino`` logger for this command: ``-q`` errors only, default warnings plus steps that run for
    :data:`STEP_AFTER` s (:class:`LogLines`), ``-v`` every INFO record, ``-vv`` DEBUG too (epochs, step times)."""
    global _verbosity
    _verbosity = verbosity
    logger = logging.getLogger("geodino")
    logger.setLevel(logging.DEBUG)  # every record reaches LOG_LINES, which shows what the verbosity asks (and ends steps)
    logger.propagate = False  # not also through the root logger's handlers (Python's last resort prints WARNING+)
    if LOG_LINES not in logger.handlers:
        logger.addHandler(LOG_LINES)


class LogLines(logging.Handler):
    """geodino's log records on stderr, one plain line each: ``geodino: warning: ...`` (``info``/``debug`` with
    ``-v``/``-vv``). A step's INFO record (:func:`geodino.steps.step`) is held at the default verbosity: the step is
    printed only once it has run :data:`STEP_AFTER` s (:data:`LOG_EVERY` s when stderr is not a terminal), then every
    :data:`LOG_EVERY` s (``geodino: loading ... weights from ..., 0:00:03``) until its end record, so a quick step, and
    an error line, stand alone."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self._steps: dict[int, tuple[str, float]] = {}  # running steps: id -> (message, start)
        self._due = 0.0
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def emit(self, record: logging.LogRecord) -> None:
        kind, message = getattr(record, "geodino_step", None), " ".join(record.getMessage().split())
        sid = cast("int", getattr(record, "step_id", 0))  # steps.step sets both
        if kind == steps.START:
            with self._wake:
                now = time.perf_counter()
                self._steps[sid] = (message, now)
                self._due = now + (STEP_AFTER if _verbosity <= 0 and err_console.is_terminal else LOG_EVERY)
                self._start_ticker()
        elif kind == steps.END:
            with self._wake:
                self._steps.pop(sid, None)
        shown = logging.ERROR if _verbosity < 0 else logging.WARNING if _verbosity == 0 else logging.INFO if _verbosity == 1 else 0
        if record.levelno >= shown:
            err_console.print(f"geodino: {record.levelname.lower()}: {message}", markup=False, highlight=False, soft_wrap=True)

    def end_steps(self) -> None:
        """Forget running steps (the command has ended)."""
        with self._wake:
            self._steps.clear()

    def _start_ticker(self) -> None:
        if self._thread is None:  # (called holding the lock, which the ticker holds until it has reset this)
            self._thread = threading.Thread(target=self._tick, name="geodino-steps", daemon=True)
            self._thread.start()

    def _tick(self) -> None:
        """Print the latest running step when it is due; the thread ends when no step runs."""
        with self._wake:
            while self._steps:
                self._wake.wait(0.25)
                now = time.perf_counter()
                if not self._steps or now < self._due or _verbosity < 0:
                    continue
                message, start = self._steps[max(self._steps)]
                err_console.print(f"geodino: {message}, {clock(now - start)}", markup=False, highlight=False, soft_wrap=True)
                self._due = now + LOG_EVERY
            self._thread = None


LOG_LINES = LogLines()


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
            LOG_LINES.end_steps()
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


_LIVE: list[TileBar] = []  # the bar on screen (rich shows one live display at a time)


class TileBar:
    """A rich progress bar on stderr (tiles, tiles/s, elapsed, ETA) that appears at the first tile, so
    errors raised while checking inputs stay one line. Call it as ``progress(done, total)``, or
    ``progress(done, total, status)`` to show e.g. the loss. When stderr is not a terminal, plain lines instead: one
    every :data:`LOG_EVERY` seconds and one at the end. ``-q``: nothing. ``from_first``: time from the first call
    (epochs after a features pass), not from entering. A bar that starts stops the one shown before it."""

    def __init__(self, label: str = "encoding", unit: str = "tiles", from_first: bool = False) -> None:
        self.label, self.unit, self.from_first = label, unit, from_first
        self.bar: Progress | None = None
        self.start = time.perf_counter()
        self._logged = self.start
        self._started = False

    def __call__(self, done: int, total: int, status: str = "") -> None:
        if not self._started:
            flush_notes()  # the work has started: what geodino decided goes above the bar
            self._started = True
            if self.from_first:
                self.start = self._logged = time.perf_counter()
        if _verbosity < 0:
            return
        if not err_console.is_terminal:
            self._line(done, total, status)
            return
        if self.bar is None:
            for other in _LIVE:
                other.stop()
            _LIVE[:] = [self]
            cols = (TextColumn(self.label), BarColumn(), MofNCompleteColumn(), TextColumn(self.unit), RateColumn(), ElapsedColumn())
            self.bar = Progress(*cols, EtaColumn(), TextColumn("{task.fields[status]}"), console=err_console)
            self.bar.start()
            self.task = self.bar.add_task(self.label, total=total, rate=None, elapsed=0, unit=self.unit, status=status)
        elapsed = time.perf_counter() - self.start
        self.bar.update(self.task, completed=done, total=total, rate=done / max(elapsed, 1e-9), elapsed=elapsed, status=status)

    def _line(self, done: int, total: int, status: str = "") -> None:
        """``encoding 12/81 tiles, 3.40 tiles/s, 0:00:03, ETA 0:00:20`` (then ``, status``) every :data:`LOG_EVERY` s,
        and at the end."""
        now = time.perf_counter()
        if done < total and now - self._logged < LOG_EVERY:
            return
        self._logged, elapsed = now, now - self.start
        rate = done / max(elapsed, 1e-9)
        eta = f", ETA {clock((total - done) / rate)}" if done < total and rate > 0 else ""
        more = f", {status}" if status else ""
        line = f"{self.label} {done}/{total} {self.unit}, {rate:.2f} {self.unit}/s, {clock(elapsed)}{eta}{more}"
        err_console.print(line, highlight=False)

    def stop(self, failed: bool = False) -> None:
        """Stop the rich bar (kept on screen unless ``failed``: then the error line stands alone)."""
        if self.bar is not None:
            if failed:
                self.bar.live.transient = True
            self.bar.stop()
            self.bar = None

    def __enter__(self) -> TileBar:
        self.start = time.perf_counter()
        return self

    def __exit__(self, exc_type: object = None, *exc: object) -> None:
        self.stop(failed=exc_type is not None)  # a failed run: the error line stands alone (no final bar in a log either)
        if self in _LIVE:
            _LIVE.remove(self)
