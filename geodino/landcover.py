"""Land cover from frozen DINOv3 features: a linear head (BatchNorm + 1x1 conv) trained on labelled pixels.

Recipe of the DINOv2 linear segmentation probe: features of the last blocks concatenated, BatchNorm,
a 1x1 convolution to class logits on the patch grid, logits upsampled bilinearly to pixels. Training
uses the same upsampling: the features are interpolated (bilinear, as ``F.interpolate(...,
align_corners=False)``) at labelled pixel centres, which for an affine head equals upsampling logits.
The split is spatial: blocks of ``block`` pixels go wholly to training or to validation.
"""

from __future__ import annotations

import logging
import pickle
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geodino.adapter import BandAdapter
from geodino.contract import CONTRACT_KEY, contract_problem, head_contract
from geodino.engine import EncodeOptions, Progress, encode_scene
from geodino.errors import InputError
from geodino.features import FeatureExtractor
from geodino.job import BandChoice, Job, Tiling, as_job
from geodino.labels import MAX_CLASSES, PALETTE, Labels
from geodino.metrics import classification_metrics
from geodino.models.checkpoint import first_nonfinite
from geodino.scene import Scene

HEAD_FORMAT = "geodino-landcover-head/1"
#: ``epoch_progress(epoch, epochs, loss)`` after each training epoch (1-based), with that epoch's training loss.
EpochProgress = Callable[[int, int, float], None]
log = logging.getLogger(__name__)


class LinearHead(nn.Module):
    """``(B, D, h, w)`` features -> ``(B, C, h, w)`` logits: BatchNorm2d then a 1x1 convolution."""

    def __init__(self, dim: int, n_classes: int) -> None:
        super().__init__()
        self.n_classes = n_classes
        self.bn = nn.BatchNorm2d(dim)
        self.conv = nn.Conv2d(dim, n_classes, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(self.bn(x))


def pixel_features(features: Tensor, rows: np.ndarray, cols: np.ndarray, patch: int = 16) -> Tensor:
    """``(D, h, w)`` patch-grid features -> ``(N, D)`` bilinearly interpolated at pixel centres ``(rows, cols)``."""
    _, h, w = features.shape
    x = (2 * (cols + 0.5) / (patch * w)) - 1  # grid_sample's align_corners=False maps this to (c + 0.5)/16 - 0.5
    y = (2 * (rows + 0.5) / (patch * h)) - 1
    grid = torch.tensor(np.stack([x, y], -1), dtype=torch.float32)[None, None]  # (1, 1, N, 2)
    out = F.grid_sample(features[None], grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out[0, :, 0].T  # (N, D)


def spatial_split(rows: np.ndarray, cols: np.ndarray, block: int, val_fraction: float, seed: int) -> np.ndarray:
    """Boolean validation mask: whole ``block x block`` pixel blocks drawn at random until ``val_fraction`` of the pixels."""
    ids = (rows // block) * 1_000_003 + cols // block
    blocks, counts = np.unique(ids, return_counts=True)
    order = np.random.default_rng(seed).permutation(len(blocks))
    chosen, total = [], 0
    for i in order[:-1] if len(blocks) > 1 else []:  # at least one block stays for training
        if total >= val_fraction * len(rows):
            break
        chosen.append(blocks[i])
        total += counts[i]
    return np.isin(ids, chosen)


@dataclass
class TrainResult:
    head: LinearHead
    info: dict[str, object]
    losses: list[float]


def train_head(
    scene: Job | Scene,
    labels: Labels,
    extractor: FeatureExtractor,
    *,
    tiling: Tiling = Tiling(),
    choice: BandChoice = BandChoice(),
    epochs: int = 300,
    lr: float = 1e-2,
    max_pixels: int = 50_000,
    block: int = 64,
    val_fraction: float = 0.2,
    seed: int = 0,
    progress: Progress | None = None,
    adapter: BandAdapter | None = None,
    epoch_progress: EpochProgress | None = None,
) -> TrainResult:
    """Encode ``scene`` (a prepared :class:`~geodino.job.Job`, or a scene prepared here with ``tiling``/``choice``, or
    with ``adapter``) to a temporary feature raster, then fit a :class:`LinearHead` on labelled pixels.
    ``progress(done, total)`` follows the tiles, ``epoch_progress(epoch, epochs, loss)`` the epochs (also logged at DEBUG)."""
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise InputError(f"epochs must be >= 1, not {epochs!r}")
    if not 2 <= labels.n_classes <= MAX_CLASSES:
        raise InputError(
            f"labels {labels.source} give {labels.n_classes} classes: a head takes 2 to {MAX_CLASSES} "
            "(class rasters are uint8 with 255 as nodata)"
        )
    job = as_job(scene, extractor, tiling, choice, adapter)
    with tempfile.TemporaryDirectory(prefix="geodino-train-") as tmp:
        enc = encode_scene(job, Path(tmp) / "features.tif", extractor, EncodeOptions(overwrite=True), progress)
        with rasterio.open(enc.out) as ds:
            feats = torch.from_numpy(np.nan_to_num(ds.read()))  # (D, h, w)
    rows, cols = np.nonzero(labels.pixels >= 0)
    rng = np.random.default_rng(seed)
    if len(rows) > max_pixels:
        keep = np.sort(rng.choice(len(rows), max_pixels, replace=False))
        rows, cols = rows[keep], cols[keep]
    y = torch.from_numpy(labels.pixels[rows, cols].astype(np.int64))
    x = pixel_features(feats, rows, cols, extractor.patch)[:, :, None, None]  # (N, D, 1, 1)
    val = spatial_split(rows, cols, block, val_fraction, seed)
    train_idx, val_idx = np.flatnonzero(~val), np.flatnonzero(val)
    if len(np.unique(y[train_idx].numpy())) < 2:
        raise InputError("after the spatial split the training part holds a single class: add labels in more places")
    torch.manual_seed(seed)
    head = LinearHead(x.shape[1], labels.n_classes)
    counts = torch.bincount(y[train_idx], minlength=labels.n_classes).float()
    weight = torch.where(counts > 0, counts.sum() / (counts.clamp(min=1) * (counts > 0).sum()), torch.zeros_like(counts))
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=1e-4)
    losses = []
    head.train()
    log.info("training a linear head: %d epochs on %d labelled pixels (%d held out)", epochs, len(train_idx), len(val_idx))
    for epoch in range(1, epochs + 1):
        opt.zero_grad()
        loss = F.cross_entropy(head(x[train_idx])[:, :, 0, 0], y[train_idx], weight=weight)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        log.debug("epoch %d/%d: loss %.4f", epoch, epochs, losses[-1])
        if epoch_progress is not None:
            epoch_progress(epoch, epochs, losses[-1])
    head.eval()
    with torch.no_grad():
        pred = head(x)[:, :, 0, 0].argmax(1).numpy()
    names = list(labels.names)
    truth = y.numpy()
    metrics = {
        "train": classification_metrics(pred[train_idx], truth[train_idx], labels.n_classes, names),
        "validation": classification_metrics(pred[val_idx], truth[val_idx], labels.n_classes, names) if len(val_idx) else None,
        "split": f"spatial blocks of {block} px, {len(train_idx)} training and {len(val_idx)} validation pixels",
    }
    info = {
        "format": HEAD_FORMAT,
        "classes": [v if isinstance(v, (int, float, str)) else str(v) for v in labels.values],
        "names": names,
        "colours": [list(PALETTE[i % len(PALETTE)]) for i in range(labels.n_classes)],
        "labels": labels.source,
        "class_column": labels.column,
        **{
            k: v
            for k, v in extractor.describe().items()
            if k in ("model", "weights", "weights_sha256", "random_weights", "layers", "mean", "std")
        },
        "adapter": enc.adapter.record(),  # the scene actually encoded
        CONTRACT_KEY: head_contract(enc.adapter),
        "metrics": metrics,
        "loss_first_last": [losses[0], losses[-1]],
        "epochs": epochs,
    }
    return TrainResult(head, info, losses)


def save_head(path: str | Path, head: LinearHead, info: dict[str, object]) -> Path:
    """Write the head and its record (classes, names, colours, backbone, layers, normalisation, adapter, input
    contract, metrics). The contract (:func:`geodino.contract.head_contract`: preset, stretch policy, identities
    of the input bands in order, GSD) is optional in the format: heads written before it still load."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.part")
    torch.save({"info": info, "dim": head.bn.num_features, "state_dict": head.state_dict()}, tmp)
    tmp.replace(path)
    return path


def _head_problem(blob: object) -> str | None:
    """What is wrong with a loaded head file's structure (after the format check), or None."""
    assert isinstance(blob, dict)
    info, dim, sd = blob["info"], blob.get("dim"), blob.get("state_dict")
    classes, names, layers = info.get("classes"), info.get("names"), info.get("layers")
    if not isinstance(classes, list) or not 2 <= len(classes) <= MAX_CLASSES:
        return f"classes must be a list of 2 to {MAX_CLASSES} values, not {_brief(classes)}"
    if not isinstance(names, list) or len(names) != len(classes) or not all(isinstance(n, str) for n in names):
        return f"names must be a list of {len(classes)} strings, not {_brief(names)}"
    if not isinstance(info.get("model"), str):
        return f"model must be a spec name, not {_brief(info.get('model'))}"
    if not isinstance(layers, list) or not layers or not all(isinstance(i, int) and not isinstance(i, bool) for i in layers):
        return f"layers must be a non-empty list of block indexes, not {_brief(layers)}"
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
        return f"dim must be a positive integer, not {_brief(dim)}"
    if not isinstance(sd, dict) or not all(isinstance(v, Tensor) for v in sd.values()):
        return "state_dict must be a dict of tensors"
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in LinearHead(dim, len(classes)).state_dict().items()}
    got = {str(k): tuple(v.shape) for k, v in sd.items()}
    if got != expected:
        bad = sorted(k for k in expected.keys() | got.keys() if got.get(k) != expected.get(k))
        diffs = ", ".join(f"{k} {got.get(k)} vs {expected.get(k)}" for k in bad[:3])
        return f"its state dict does not fit dim {dim} and {len(classes)} classes ({diffs})"
    if (key := first_nonfinite(sd)) is not None:
        return f"tensor '{key}' holds NaN/inf values"
    if CONTRACT_KEY in info:  # absent in heads written before contracts: an unknown contract, used as before
        return contract_problem(info[CONTRACT_KEY])
    return None


def _brief(value: object) -> str:
    text = " ".join(repr(value).split())
    return text if len(text) <= 40 else text[:37] + "..."


def load_head(path: str | Path) -> tuple[LinearHead, dict[str, object]]:
    """Read a head written by :func:`save_head` (weights-only unpickling); malformed files raise one-line :class:`InputError`."""
    if not Path(path).is_file():
        raise InputError(
            f"head file not found: {path}" if not Path(path).exists() else f"{path} is not a file: pass the .pt from train-head"
        )
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(blob, dict) or not isinstance(blob.get("info"), dict) or blob["info"].get("format") != HEAD_FORMAT:
            raise KeyError("format")
    except (OSError, KeyError, RuntimeError, TypeError, AttributeError, pickle.UnpicklingError, EOFError) as exc:
        raise InputError(f"{path} is not a land-cover head written by geodino train-head ({type(exc).__name__})") from None
    problem = _head_problem(blob)
    if problem is not None:
        raise InputError(f"land-cover head {path} is not valid: {problem}")
    info = blob["info"]
    head = LinearHead(blob["dim"], len(info["classes"]))
    head.load_state_dict(blob["state_dict"])
    return head.eval(), info
