"""Where weights live: an explicit path, ``GEODINO_WEIGHTS``, geodino's cache or the Hugging Face hub cache; and downloads.

The official files are gated: Meta e-mails a signed URL after its access form. ``download()``
takes that URL (http or https only), streams it with a progress bar to ``<name>.part-<pid>`` beside
the target, verifies the sha256 prefix carried in the file name, and only then moves the file into
place. A transfer has a per-read ``timeout`` and a ``deadline`` for the whole transfer. While it runs,
the process holds an exclusive lock on ``<name>.lock`` in the cache, so two downloads of one file
never write at once and the partial files of killed runs can be cleared safely.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import math
import os
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

from geodino.errors import GeodinoError, InputError, WeightsError
from geodino.lock import OutputLock
from geodino.models.hubcache import hub_cache_dir, repo_folder, snapshots
from geodino.models.pretrained import PretrainedCfg
from geodino.models.provenance import hash_in_name, sha256_file

ENV_WEIGHTS = "GEODINO_WEIGHTS"
#: what a downloaded file may be called (the name comes from the URL; nothing else is written or removed)
WEIGHT_SUFFIXES = (".pth", ".safetensors")
ENV_CACHE = "GEODINO_CACHE"
log = logging.getLogger(__name__)


def cache_dir(override: str | Path | None = None) -> Path:
    """The weights cache: ``override``, else ``$GEODINO_CACHE``, else ``~/.cache/geodino``."""
    if override is not None:
        return Path(override).expanduser()
    env = os.environ.get(ENV_CACHE)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "geodino"


def candidates_in(folder: Path, spec: PretrainedCfg) -> list[Path]:
    """Files or HF folders inside ``folder`` that hold ``spec``'s weights, best first (a hub-cache-like
    ``models--owner--repo`` folder counts with its snapshots that hold weights, ``refs/main``'s first)."""
    found: list[Path] = []
    if spec.file_name:
        found.append(folder / spec.file_name)
    found += sorted(folder.glob(f"{spec.file_stem}-*.pth")) + [folder / f"{spec.file_stem}.pth"]
    if spec.hf_repo:
        found.append(folder / spec.hf_repo.split("/")[-1])
        found += snapshots(repo_folder(folder, spec.hf_repo))  # HF hub cache layout
    seen: set[Path] = set()
    unique: list[Path] = []
    for p in found:
        if p.exists() and p not in seen:
            seen.add(p)
            unique.append(p)
    return unique


def find_weights(spec: PretrainedCfg, weights: str | Path | None = None, cache: str | Path | None = None) -> Path:
    """Resolve the checkpoint for ``spec``: an explicit file/folder, ``$GEODINO_WEIGHTS``, geodino's cache, then
    (for a spec with ``hf_repo``) the Hugging Face hub cache (:func:`~geodino.models.hubcache.hub_cache_dir`), where
    the snapshot ``refs/main`` names wins over others. The path returned is what the outputs record as ``weights``."""
    looked: list[str] = []
    for origin, value in (("weights", weights), (ENV_WEIGHTS, os.environ.get(ENV_WEIGHTS))):
        if not value:
            continue
        path = Path(value).expanduser()
        if path.is_file() or (path.is_dir() and (path / "config.json").exists()):
            return path
        if path.is_dir():
            if hits := candidates_in(path, spec):
                return hits[0]
            if origin == "weights":  # an explicit folder never falls through to other places
                raise WeightsError(f"no weights for {spec.name} in {path} (looked for {spec.file_stem}-*.pth or a Hugging Face folder)")
            looked.append(f"{origin}={path}")
        elif origin == "weights":
            raise WeightsError(f"weights file not found: {path}")
        else:
            looked.append(f"{origin}={path} (does not exist)")
    folder = cache_dir(cache)
    if folder.is_dir() and (hits := candidates_in(folder, spec)):
        return hits[0]
    looked.append(f"cache {folder}")
    if spec.hf_repo:
        hub = hub_cache_dir()
        if found := snapshots(repo_folder(hub, spec.hf_repo)):
            log.info("weights of %s from the Hugging Face cache: %s", spec.name, found[0])
            return found[0]
        looked.append(f"Hugging Face cache {hub}")
    where = spec.file_name or f"{spec.file_stem}-<hash>.pth"
    raise WeightsError(
        f"no weights for {spec.name} ({where}) in {'; '.join(looked)}: request access at "
        f"https://ai.meta.com/resources/models-and-libraries/dinov3-downloads/ then run "
        f"'geodino download {spec.name} --url URL', pass --weights PATH, or use --weights random"
    )


MIN_DEADLINE = 600.0  # seconds: the default deadline is never shorter ...
MIN_RATE = 100_000  # bytes/s: ... and allows the whole file at this rate
NO_SIZE_DEADLINE = 24 * 3600.0  # seconds: the default deadline when the server sends no Content-Length


def default_deadline(size: int | None) -> float:
    """Seconds allowed for a whole transfer of ``size`` bytes: ``max(600, size / 100 kB/s)``, one day when unknown."""
    return max(MIN_DEADLINE, size / MIN_RATE) if size else NO_SIZE_DEADLINE


def _public(url: str) -> str:
    """The URL without its query: the signature of a signed URL is a secret."""
    return url.split("?")[0]


def _check_url(url: str) -> None:
    scheme = urlparse(url).scheme.lower()
    if scheme in ("http", "https"):
        return
    if not scheme:
        raise WeightsError(f"cannot download {_public(url)!r}: not a URL (it needs an http:// or https:// scheme)")
    raise WeightsError(f"cannot download from a {scheme}:// URL ({_public(url)}): only http:// and https:// URLs are supported")


def _target_name(url: str, spec: PretrainedCfg | None) -> str:
    name = unquote(Path(urlparse(url).path).name)
    if not name and spec is not None and spec.file_name:
        name = spec.file_name
    if not name:
        raise WeightsError(f"cannot tell a file name from the URL {_public(url)}")
    if "/" in name or "\\" in name or name.startswith(".") or not name.endswith(WEIGHT_SUFFIXES):
        raise WeightsError(f"the URL {_public(url)} does not name a weights file (.pth or .safetensors): {name!r}")
    return name


def _usable_cache(folder: Path) -> Path:
    """``folder``, created if needed; a one-line WeightsError when it is a file or cannot be created."""
    if folder.exists() and not folder.is_dir():
        raise WeightsError(f"weights cache {folder} is a file, not a folder: choose another --cache-dir or GEODINO_CACHE")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WeightsError(f"cannot create the weights cache {folder}: {exc.strerror or exc}") from None
    return folder


def download(
    url: str,
    spec: PretrainedCfg | None = None,
    cache: str | Path | None = None,
    check_hash: bool = True,
    progress: bool = True,
    timeout: float = 60.0,
    deadline: float | None = None,
    verify: Callable[[Path], object] | None = None,
) -> Path:
    """Download ``url`` (http or https) into the cache and return the final path.

    The file is written as ``<name>.part-<pid>``, its sha256 checked against the hash in its name
    (and against ``spec.hash_prefix`` when the name carries none; neither with ``check_hash=False``),
    then renamed. ``timeout`` bounds each read; ``deadline`` bounds the whole transfer (default
    :func:`default_deadline` of the Content-Length). ``verify(path)``, when given, is a further check
    (e.g. loading the model) that raises a :class:`GeodinoError` for a bad file.

    The work is done holding ``<name>.lock`` in the cache: a second download of the same file meanwhile
    fails at once, naming the holder; partial files left by killed runs are removed. A file already in
    the cache is checked like a fresh one (hash, then ``verify``); one that fails is removed and
    downloaded again. On any failure or interruption (any exception, a signal turned into one) the
    partial file is removed, a fresh file that fails a check too, and the lock is released.
    """
    _check_url(url)
    if deadline is not None and not deadline > 0:
        raise InputError(f"deadline must be a positive number of seconds, not {deadline}")
    name = _target_name(url, spec)
    folder = _usable_cache(cache_dir(cache))
    target = folder / name
    expected = (hash_in_name(target) or (spec.hash_prefix if spec else None)) if check_hash else None
    with _download_lock(folder / f"{name}.lock", name):
        for leftover in folder.iterdir():  # safe: a live writer of these would hold the lock
            if leftover.name.startswith(f"{name}.part-") and leftover.name[len(name) + 6 :].isdigit():
                leftover.unlink(missing_ok=True)
        if target.exists() or target.is_symlink():
            if _passes(target, expected, verify):
                return target
            target.unlink()
        _fetch(url, target, expected, progress, timeout, deadline)
        if verify is not None:
            try:
                verify(target)
            except BaseException:
                target.unlink(missing_ok=True)
                raise
    return target


def _passes(target: Path, expected: str | None, verify: Callable[[Path], object] | None) -> bool:
    """Whether a file already in the cache passes the checks a fresh download would."""
    if target.is_dir():
        raise WeightsError(f"{target} is a folder, not a weights file: remove it and download again")
    if not target.is_file():  # a dangling link
        return False
    try:
        if expected and not sha256_file(target).startswith(expected):
            return False
    except OSError:  # unreadable, or a dangling link
        return False
    if verify is not None:
        try:
            verify(target)
        except GeodinoError:
            return False
    return True


def _fetch(url: str, target: Path, expected: str | None, progress: bool, timeout: float, deadline: float | None) -> None:
    tmp = target.with_name(f"{target.name}.part-{os.getpid()}")
    digest = hashlib.sha256()
    started = time.monotonic()
    limit, got, total = deadline if deadline is not None else math.inf, 0, None
    try:
        with urllib.request.urlopen(url, timeout=min(timeout, limit)) as resp, open(tmp, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0) or None
            limit = deadline if deadline is not None else default_deadline(total)
            with _progress_bar(progress, total, target.name) as advance:
                while block := resp.read1(1 << 20):  # one recv at most, so the deadline is checked as bytes trickle in
                    out.write(block)
                    digest.update(block)
                    got += len(block)
                    advance(len(block))
                    if time.monotonic() - started > limit and got != total:
                        raise TimeoutError("deadline")
        if total is not None and got != total:
            raise WeightsError(f"download of {target.name} stopped at {got} of {total} bytes")
        hexdigest = digest.hexdigest()
        if expected and not hexdigest.startswith(expected):
            raise WeightsError(
                f"downloaded {target.name} has sha256 {hexdigest[:8]}..., expected {expected}: the file is corrupt or not the official one"
            )
        os.replace(tmp, target)
    except (OSError, http.client.HTTPException) as exc:  # URLError is an OSError; a dropped connection is not a URLError
        if time.monotonic() - started > limit:
            of = f" of {total}" if total else ""
            raise WeightsError(
                f"download of {target.name} passed its {limit:g} s deadline with {got}{of} bytes received: "
                "the server is too slow; try again later or allow a longer deadline"
            ) from None
        raise WeightsError(f"download failed: {_public(url)}: {getattr(exc, 'reason', exc)}") from None
    finally:
        tmp.unlink(missing_ok=True)


def _download_lock(path: Path, name: str) -> OutputLock:
    """The output layer's lock on ``path``; a WeightsError naming the holder when another download has it."""

    def busy(holder: str) -> WeightsError:
        return WeightsError(
            f"{name} is already being downloaded into {path.parent} by {holder}: wait for it to finish, or stop it, and try again"
        )

    return OutputLock(path, name, busy)


@contextlib.contextmanager
def _progress_bar(enabled: bool, total: int | None, label: str) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr yielding ``advance(n_bytes)``; a no-op when disabled or when stderr
    is not a terminal (a pipe or a log gets no bar, and stdout stays clean for the result)."""
    from rich.console import Console

    console = Console(stderr=True)
    if not enabled or not console.is_terminal:
        yield lambda n: None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)
