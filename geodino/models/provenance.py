"""Where loaded weights came from: file hashes and :class:`WeightsInfo`, recorded in every output.

Imports nothing else of geodino's model code, so the ViT, the loaders and the stores can all name
it. A spec's *official* provenance (file name, hash prefix, URL) is :class:`~geodino.models.pretrained.PretrainedCfg`.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from geodino.errors import WeightsError

RANDOM = "random"
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.(pth|pt)$")


def hash_in_name(path: str | Path) -> str | None:
    """The hash prefix in a torch.hub-style name (``name-<hex>.pth``), or None."""
    m = _HASH_IN_NAME.search(Path(path).name)
    return m.group(1) if m else None


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 4 MiB chunks; remembered per (path, size, mtime), so verifying a
    checkpoint at load and recording its hash in every output read the file once."""
    st = os.stat(path)
    return _sha256(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def verify_hash(path: str | Path, expected: str | None = None) -> str | None:
    """Check that the file's sha256 starts with ``expected`` (default: the hash in its name).

    Returns the verified prefix, or None when there is nothing to verify against.
    """
    expected = expected or hash_in_name(path)
    if not expected:
        return None
    digest = sha256_file(path)
    if not digest.startswith(expected):
        raise WeightsError(
            f"{Path(path).name}: sha256 starts with {digest[:8]}, the name promises {expected}: the file is "
            "corrupt, truncated or not the official one (to load it anyway: --no-check-hash, or check_hash=False in Python)"
        )
    return expected


@dataclass(frozen=True)
class WeightsInfo:
    """Provenance of a model's weights, recorded in every output geodino writes."""

    spec: str
    source: str  # a path, or "random"
    layout: str  # "meta", "hf" or "random"
    hash_verified: str | None = None
    seed: int | None = None

    @property
    def is_random(self) -> bool:
        return self.layout == RANDOM

    @property
    def sha256(self) -> str | None:
        """Full sha256 of the weights file (memoised, so a hash verified at load is not recomputed);
        ``"random"`` for random weights; the verified prefix, if any, for a folder."""
        if self.is_random:
            return RANDOM
        path = Path(self.source)
        return sha256_file(path) if path.is_file() else self.hash_verified

    def as_dict(self) -> dict[str, object]:
        return asdict(self)
