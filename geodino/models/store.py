"""Where weights live: an explicit path, ``GEODINO_WEIGHTS``, or the cache directory; and downloads.

The official files are gated: Meta e-mails a signed URL after its access form. ``download()``
takes that URL, streams it with a progress bar to a temporary name beside the target, verifies the
sha256 prefix carried in the file name, and only then moves the file into place.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

from geodino.errors import WeightsError
from geodino.models.checkpoint import hash_in_name
from geodino.models.specs import WeightsSpec

ENV_WEIGHTS = "GEODINO_WEIGHTS"
ENV_CACHE = "GEODINO_CACHE"


def cache_dir(override: str | Path | None = None) -> Path:
    """The weights cache: ``override``, else ``$GEODINO_CACHE``, else ``~/.cache/geodino``."""
    if override is not None:
        return Path(override).expanduser()
    env = os.environ.get(ENV_CACHE)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "geodino"


def candidates_in(folder: Path, spec: WeightsSpec) -> list[Path]:
    """Files or HF folders inside ``folder`` that hold ``spec``'s weights, best first."""
    found: list[Path] = []
    if spec.file_name:
        found.append(folder / spec.file_name)
    found += sorted(folder.glob(f"{spec.file_stem}-*.pth")) + [folder / f"{spec.file_stem}.pth"]
    if spec.hf_repo:
        owner, repo = spec.hf_repo.split("/")
        found.append(folder / repo)
        found += sorted((folder / f"models--{owner}--{repo}" / "snapshots").glob("*"))  # HF hub cache layout
    seen: set[Path] = set()
    return [p for p in found if p.exists() and not (p in seen or seen.add(p))]


def find_weights(spec: WeightsSpec, weights: str | Path | None = None, cache: str | Path | None = None) -> Path:
    """Resolve the checkpoint for ``spec``: an explicit file/folder, ``$GEODINO_WEIGHTS``, then the cache."""
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
    where = spec.file_name or f"{spec.file_stem}-<hash>.pth"
    raise WeightsError(
        f"no weights for {spec.name} ({where}) in {'; '.join(looked)}: request access at "
        f"https://ai.meta.com/resources/models-and-libraries/dinov3-downloads/ then run "
        f"'geodino download {spec.name} --url URL', pass --weights PATH, or use --weights random"
    )


def _target_name(url: str, spec: WeightsSpec | None) -> str:
    name = unquote(Path(urlparse(url).path).name)
    if not name and spec is not None and spec.file_name:
        name = spec.file_name
    if not name:
        raise WeightsError(f"cannot tell a file name from the URL {url}")
    return name


def download(
    url: str,
    spec: WeightsSpec | None = None,
    cache: str | Path | None = None,
    check_hash: bool = True,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` into the cache and return the final path.

    The file is written as ``<name>.part-<pid>``, its sha256 checked against the hash in its name
    (and against ``spec.hash_prefix`` when the name carries none), then renamed. On any failure the
    partial file is removed. An existing file of that name is kept (its hash is checked when loaded).
    """
    folder = cache_dir(cache)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / _target_name(url, spec)
    expected = hash_in_name(target) or (spec.hash_prefix if spec and check_hash else None)
    if target.exists():
        return target
    tmp = target.with_name(f"{target.name}.part-{os.getpid()}")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with _progress_bar(progress, total, target.name) as advance:
                while block := resp.read(1 << 20):
                    out.write(block)
                    digest.update(block)
                    advance(len(block))
        if total is not None and tmp.stat().st_size != total:
            raise WeightsError(f"download of {target.name} stopped at {tmp.stat().st_size} of {total} bytes")
        hexdigest = digest.hexdigest()
        if check_hash and expected and not hexdigest.startswith(expected):
            raise WeightsError(
                f"downloaded {target.name} has sha256 {hexdigest[:8]}..., expected {expected}: the file is corrupt or not the official one"
            )
        os.replace(tmp, target)
    except (OSError, http.client.HTTPException) as exc:  # URLError is an OSError; a dropped connection is not a URLError
        raise WeightsError(f"download failed: {url.split('?')[0]}: {getattr(exc, 'reason', exc)}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return target


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
