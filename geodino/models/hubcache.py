"""The Hugging Face hub cache, read without huggingface_hub: where it is and which snapshot of a repo holds weights.

``hf download facebook/dinov3-vitl16-pretrain-sat493m`` (or ``from_pretrained``) leaves::

    <hub cache>/models--facebook--dinov3-vitl16-pretrain-sat493m/
        blobs/<sha256>                      the files' contents
        refs/main                           the commit hash that ``main`` pointed at when downloaded
        snapshots/<commit>/model.safetensors -> ../../blobs/<sha256>   (symlinks; copies on Windows)

The cache folder follows huggingface_hub's documented rules (``constants.py``): ``$HF_HUB_CACHE``, else the legacy
``$HUGGINGFACE_HUB_CACHE``, else ``$HF_HOME/hub``, where ``HF_HOME`` defaults to ``$XDG_CACHE_HOME/huggingface`` or
``~/.cache/huggingface``; ``~`` and ``$VARS`` in these are expanded. Nothing here writes to the cache.
"""

from __future__ import annotations

import os
from pathlib import Path

#: the variables that name the hub cache itself, in the order huggingface_hub reads them
ENV_HUB_CACHE = ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE")
ENV_HF_HOME = "HF_HOME"


def _expand(value: str) -> Path:
    return Path(os.path.expandvars(os.path.expanduser(value)))


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache folder (it may not exist): ``$HF_HUB_CACHE``, ``$HUGGINGFACE_HUB_CACHE``,
    ``$HF_HOME/hub``, ``$XDG_CACHE_HOME/huggingface/hub``, else ``~/.cache/huggingface/hub``; empty values count as unset."""
    for name in ENV_HUB_CACHE:
        if value := os.environ.get(name):
            return _expand(value)
    if home := os.environ.get(ENV_HF_HOME):
        return _expand(home) / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (_expand(xdg) if xdg else Path.home() / ".cache") / "huggingface" / "hub"


def repo_folder(cache: Path, repo_id: str) -> Path:
    """``<cache>/models--<owner>--<name>`` for ``repo_id`` ``"owner/name"``."""
    return cache / ("models--" + repo_id.replace("/", "--"))


def holds_weights(snapshot: Path) -> bool:
    """Whether a snapshot folder has a readable safetensors file (a link into ``blobs/`` that resolves), i.e. more
    than the ``config.json`` of an interrupted or partial download."""
    return any(p.is_file() for p in snapshot.glob("*.safetensors"))


def snapshots(repo: Path) -> list[Path]:
    """The snapshots of a cached repo that hold weights, best first: the one ``refs/main`` names, then the others,
    newest (modification time) first. Empty when the repo is not cached."""
    folder = repo / "snapshots"
    if not folder.is_dir():
        return []
    found = sorted((p for p in folder.iterdir() if p.is_dir()), key=lambda p: (-p.stat().st_mtime_ns, p.name))
    main = _ref(repo, "main")
    found.sort(key=lambda p: p.name != main)  # stable: refs/main first, the rest stay newest first
    return [p for p in found if holds_weights(p)]


def _ref(repo: Path, name: str) -> str | None:
    """The commit hash a ref file names (``refs/main``), None when absent or unreadable."""
    try:
        return (repo / "refs" / name).read_text().strip() or None
    except (OSError, UnicodeDecodeError):
        return None
