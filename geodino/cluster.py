"""Encoding a scene block by block on a dask scheduler into one resumable Zarr store.

Schedulers: dask's threaded scheduler in this process (the default), a local ``dask.distributed``
cluster of ``workers`` processes, or an existing cluster at ``scheduler`` (an address such as
``tcp://host:8786``). Workers read their own windows of the scene (pixels never travel through the
scheduler), build the backbone once per process from a :class:`~geodino.blocks.ModelRef`, and write
their blocks straight into the store (:mod:`geodino.runstore`); nothing is gathered whole.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import logging
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, cast

from geodino.adapter import BandAdapter
from geodino.blocks import Block, BlockPlan, ModelRef, auto_chunk, block_record, release, run_block
from geodino.engine import EncodeOptions, check_options
from geodino.errors import GeodinoError, InputError, Interrupted, Terminated
from geodino.job import Job, as_job
from geodino.outputs import OutputSet, absolute
from geodino.runstore import BlockRows, ZarrRun, file_identity
from geodino.scene import Scene, open_scene
from geodino.stacitem import with_items
from geodino.streams import stream_workers
from geodino.tilemodel import TileModel
from geodino.tiling import TilePlan
from geodino.writer import output_format

if TYPE_CHECKING:
    from distributed import Client, LocalCluster

#: ``progress(blocks_done, blocks_total)``
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class BlockJob:
    """Everything a worker needs for one block (a small picklable value): run it, write it, mark it done."""

    job: Job
    model: ModelRef | TileModel
    dtype: str
    run_folder: str

    def __call__(self, block: Block) -> str:
        try:
            with BlockRows(self.run_folder, block, self.dtype, workers=stream_workers()) as rows:
                run_block(self.job, self.model, block, on_rows=rows.add)  # chunk rows written while the block runs
        except GeodinoError as exc:  # re-raised bare: a chained GDAL error would not survive the trip back
            error = type(exc)(*exc.args)
        else:
            return block.key
        raise error


@dataclass
class ZarrResult:
    out: Path
    grid_shape: tuple[int, int]
    bands: int
    blocks: int
    chunk: int
    blocks_resumed: int
    tiles_run: int
    seconds: float
    scheduler: str
    adapter: BandAdapter
    crs: str | None
    metadata: dict[str, object] = field(repr=False)


def encode_to_zarr(
    scene: Job | Scene | str | Path | list[str],
    out: str | Path,
    model: ModelRef | TileModel,
    options: EncodeOptions = EncodeOptions(fmt="zarr"),
    chunk: int | None = None,
    scheduler: str | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
    threads: int | None = None,
    adapter: BandAdapter | None = None,
) -> ZarrResult:
    """Run ``model`` over ``scene`` (a path, :class:`Scene` or prepared :class:`~geodino.job.Job`) into the Zarr store
    ``out`` in ``chunk x chunk``-cell blocks; resumes an interrupted run. ``model``: a :class:`ModelRef` (built once
    per worker) or a TileModel object (pickled to the workers of a cluster).

    ``chunk`` None: that of the unfinished run being resumed, else :func:`~geodino.blocks.auto_chunk` for the workers.

    ``scheduler``: None or ``"threads"`` (this process), or a ``dask.distributed`` address; ``workers``: start
    a local cluster of that many processes (1 dask thread and ``threads`` torch threads each, default
    cores / workers). The values equal ``encode_scene`` with the same settings.
    """
    t0 = time.perf_counter()
    if output_format(out, options.fmt or "zarr") != "zarr":
        raise InputError(f"encode_to_zarr writes a Zarr store, not fmt={options.fmt!r}")
    check_request(options, chunk, scheduler, workers)
    out = absolute(out)  # workers may run in other folders
    if not isinstance(scene, (Job, Scene)):
        scene = open_scene(scene).absolute()
    paths = scene.scene.paths if isinstance(scene, Job) else scene.paths
    model_inputs = model.inputs() if isinstance(model, ModelRef) else []
    with OutputSet(with_items({"features": out}), [*paths, *model_inputs], options.overwrite) as outs:
        run = ZarrRun(out)
        fresh = options.overwrite or not run.folder.exists()
        try:
            res = _run_blocks(scene, out, run, model, options, chunk, scheduler, workers, progress, threads, adapter)
        except (KeyboardInterrupt, Terminated) as exc:
            code = 128 + (exc.signum if isinstance(exc, Terminated) else signal.SIGINT)
            kept = len(run.done())
            if fresh and not kept:
                run.discard()
                raise Interrupted("interrupted before any block was finished: nothing kept", code) from None
            raise Interrupted(f"interrupted: {kept} blocks kept in {run.folder}; run the same command again to resume", code) from None
        except BaseException:
            if fresh and not run.done():  # nothing worth resuming: leave nothing behind
                run.discard()
            raise
        outs.use("features", run.seal(res.blocks))
        outs.commit()
    run.discard()
    res.seconds = time.perf_counter() - t0
    return res


def _run_blocks(
    scene: Job | Scene, out: Path, run: ZarrRun, model: ModelRef | TileModel, options: EncodeOptions, chunk: int | None,
    scheduler: str | None, workers: int | None, progress: Progress | None, threads: int | None, adapter: BandAdapter | None,
) -> ZarrResult:  # fmt: skip
    """Build (or resume) the run's store and encode every block not done yet; checks that all are done."""
    extractor = model.extractor() if isinstance(model, ModelRef) else model  # weights checked before any worker starts
    job = as_job(scene, extractor, options.tiling, options.choice, adapter)  # adapter: prepared by the caller
    with BlockRunner(scheduler, workers, threads) as runner:  # connected before anything is written
        chunk = (None if options.overwrite else run.previous_chunk()) if chunk is None else chunk
        chunk = chunk or auto_chunk(job.plan, runner.n_workers, scale=job.scale)
        blocks = BlockPlan(job.plan, chunk, job.scale)
        meta = block_record(job, blocks, extractor, options.dtype)
        fingerprint = {k: v for k, v in meta.items() if k != "created"} | {"scene_files": file_identity(job.scene.paths)}
        if runner.client is not None and isinstance(model, ModelRef):  # the workers build their own: free this copy
            del extractor
            release(model)
        done = run.prepare(fingerprint, job.grid, job.channels, options.dtype, chunk, meta, options.overwrite)
        todo = [b for b in blocks.blocks() if b.key not in done]
        block_job = BlockJob(job, model, options.dtype, str(run.folder))
        if progress:
            progress(len(done), len(blocks))
        runner.run(block_job, todo, lambda n: progress(len(done) + n, len(blocks)) if progress else None)
    missing = len(blocks) - len(run.done())
    if missing:
        raise InputError(f"{missing} blocks were not written: re-run the same command to finish {out}")
    tiles_run = cast("dict[str, int]", meta["blocks"])["tiles_run"]
    return ZarrResult(
        out, job.grid_shape, job.dim, len(blocks), chunk, len(done), tiles_run, 0.0, runner.where, job.adapter, job.scene.crs, meta
    )


def check_request(options: EncodeOptions, chunk: int | None, scheduler: str | None, workers: int | None) -> None:
    """Refuse, before any work, what a block-wise run cannot do."""
    if options.pca or options.tokens:
        raise InputError("--pca and --tokens are not available for block-wise Zarr runs: encode to a COG for them")
    if workers is not None and not 1 <= workers <= (os.cpu_count() or 1):
        raise InputError(f"--workers {workers}: give 1 to {os.cpu_count() or 1} (the cores of this machine; a bigger cluster: --scheduler)")
    if workers is not None and scheduler not in (None, "threads"):
        raise InputError("give either --scheduler ADDRESS (an existing cluster) or --workers N (a local one), not both")
    if chunk is not None:
        BlockPlan(TilePlan(16, 16, 32, 0), chunk)  # chunk >= 1
    check_options(options)
    if scheduler not in (None, "threads"):
        check_address(scheduler)
    if workers is not None or scheduler not in (None, "threads"):
        require_distributed()


def require_distributed() -> None:
    """Refuse in one line a cluster run (``--workers``, ``--scheduler ADDRESS``) where ``distributed`` is not installed:
    it is the optional extra ``geodino[distributed]``; the threaded scheduler needs only dask."""
    if importlib.util.find_spec("distributed") is None:
        raise InputError("--workers and --scheduler run on a dask.distributed cluster: pip install 'geodino[distributed]' (or distributed)")


def check_address(address: str) -> str:
    """Refuse, before any connection, a scheduler address that is not ``[protocol://]host:port``."""
    m = re.fullmatch(r"(?:(tcp|tls|inproc|ucx|ws|wss)://)?(\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.-]+):(\d{1,5})", address)
    if m is None or not 0 < int(m.group(3)) < 65536:
        raise InputError(f"--scheduler {address!r} is not a dask scheduler address: give tcp://HOST:PORT (or 'threads')")
    return address


class BlockRunner:
    """Where blocks run: dask's threaded scheduler (``scheduler`` None or ``"threads"``), a local cluster of
    ``workers`` processes (1 dask thread and ``threads`` torch threads each, default cores / workers), or the
    ``dask.distributed`` cluster at the address ``scheduler``. Entering starts or connects to it."""

    def __init__(self, scheduler: str | None = None, workers: int | None = None, threads: int | None = None) -> None:
        self.scheduler, self.workers = scheduler, workers
        self.threads = threads or (max(1, (os.cpu_count() or 1) // workers) if workers else None)
        self.client: Client | None = None
        self.cluster: LocalCluster | None = None
        self.n_workers = workers or 1  # a remote cluster's count is known once connected
        if workers is not None:
            t = self.threads
            self.where = f"local cluster of {workers} process{'es' if workers != 1 else ''} x {t} torch thread{'s' if t != 1 else ''}"
        elif scheduler not in (None, "threads"):
            self.where = f"dask.distributed at {scheduler}"
        else:
            self.where = "dask threaded scheduler"

    def __enter__(self) -> BlockRunner:
        if self.where == "dask threaded scheduler":
            return self
        from dask.distributed import Client, LocalCluster

        try:
            if self.workers is not None:
                # Ctrl-C stops this process, which closes the workers (they ignore it); their errors come back
                # through the futures, so their logs stay quiet (cancelled tasks at shutdown are expected).
                with _sigint_ignored():
                    self.cluster = LocalCluster(
                        n_workers=self.workers, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=logging.CRITICAL
                    )
            # Not dask's default client: a notebook's own client (or none) stays the default for other work.
            # The connect timeout is dask's config distributed.comm.timeouts.connect.
            self.client = Client(self.cluster or self.scheduler, set_as_default=False)
            self.n_workers = self.workers or max(1, len(self.client.scheduler_info().get("workers", {})))
        except (OSError, ValueError) as exc:  # ValueError: not an address
            self.__exit__()
            raise InputError(f"cannot reach the dask scheduler {self.scheduler}: {exc}") from None
        return self

    def __exit__(self, exc_type: type[BaseException] | None = None, *exc: object) -> None:
        if exc_type is not None and issubclass(exc_type, (KeyboardInterrupt, Terminated)):
            logging.getLogger("distributed").setLevel(logging.ERROR)  # cancelled tasks and killed workers are expected now
        for part in (self.client, self.cluster):
            if part is not None:
                part.close()
        self.client = self.cluster = None

    def run(self, job: Callable[[Block], str], todo: list[Block], done: Callable[[int], None]) -> None:
        """Run ``job`` on every block; ``done(n)`` after each."""
        if self.client is None:
            _run_threads(job, todo, done)
            return
        from dask.distributed import as_completed

        if self.workers is not None and isinstance(job, BlockJob) and isinstance(job.model, ModelRef):
            job = replace(job, model=replace(job.model, threads=self.threads))
        # One block in flight per worker thread: a worker that finishes gets the next block, so equal
        # blocks spread evenly whatever the scheduler would have guessed about their cost up front.
        client, pending = self.client, iter(todo)
        info = client.scheduler_info().get("workers", {})
        slots = max(1, sum(int(w.get("nthreads", 1)) for w in info.values()))
        first = [client.submit(job, b, pure=False) for b in itertools.islice(pending, slots)]
        running = as_completed(first, loop=client.loop)
        for n, fut in enumerate(running, 1):
            fut.result()
            done(n)
            nxt = next(pending, None)
            if nxt is not None:
                running.add(client.submit(job, nxt, pure=False))


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """SIGINT ignored while child processes start (an ignored signal stays ignored across exec)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def _run_threads(job: Callable[[Block], str], todo: list[Block], done: Callable[[int], None]) -> None:
    """Dask's threaded scheduler, one block at a time (torch already uses every core for one block)."""
    import dask
    from dask.callbacks import Callback

    count = 0

    def posttask(key: object, result: object, dsk: object, state: object, worker_id: object) -> None:
        nonlocal count
        if isinstance(result, str):
            count += 1
            done(count)

    tasks = [dask.delayed(job, pure=False, traverse=False)(b, dask_key_name=f"geodino-block-{b.key}") for b in todo]
    with Callback(posttask=posttask):
        dask.compute(*tasks, scheduler="threads", num_workers=1)
