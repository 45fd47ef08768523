"""The demo job: encode a generated scene with a DINOv3 backbone and report what happened.

Runs on a fresh clone with no data and no downloaded weights (it falls back to random weights and
says so). Used by ``make demo`` through ``geodino demo``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from geodino.errors import InputError, WeightsError
from geodino.models import RANDOM, DinoVisionTransformer, build_model


def synthetic_rgb(size: int = 512, seed: int = 0, n_regions: int = 12) -> np.ndarray:
    """A generated aerial-like RGB image ``(3, size, size)`` in [0, 1]: Voronoi 'fields' with
    their own colour and texture, crossed by two straight 'roads'."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    centres = rng.uniform(0, size, size=(n_regions, 2))
    d = (yy[None] - centres[:, 0, None, None]) ** 2 + (xx[None] - centres[:, 1, None, None]) ** 2
    label = d.argmin(axis=0)
    colours = rng.uniform(0.1, 0.7, size=(n_regions, 3)).astype(np.float32)
    freq = rng.uniform(0.05, 0.4, size=n_regions).astype(np.float32)
    texture = 0.08 * np.sin(freq[label] * (xx + yy))
    img = colours[label].transpose(2, 0, 1) + texture[None] + rng.normal(0, 0.02, (3, size, size)).astype(np.float32)
    for offset in (0.3, 0.7):
        road = np.abs(yy - offset * size - 0.2 * (xx - size / 2)) < max(2, size // 128)
        img[:, road] = 0.85
    return np.clip(img, 0.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class DemoReport:
    model: str
    weights: str
    random_weights: bool
    params: int
    input_shape: tuple[int, ...]
    patch_features_shape: tuple[int, ...]
    cls_shape: tuple[int, ...]
    seconds: float
    pca_explained: tuple[float, ...]


def load_or_random(model: str, weights: str | None) -> tuple[DinoVisionTransformer, str | None]:
    """The model with real weights when found, else random weights and a note saying why."""
    if weights is not None:
        return build_model(model, weights), None
    try:
        return build_model(model), None
    except WeightsError as exc:
        return build_model(model, RANDOM), str(exc)


def run_demo(model: DinoVisionTransformer, size: int = 512, seed: int = 0) -> DemoReport:
    """Encode one generated ``size x size`` image; PCA of the ``(D, size/16, size/16)`` patch features."""
    spec = model.spec
    if spec is None:
        raise InputError("the demo needs a model made by build_model (it carries the spec's normalisation)")
    image = torch.from_numpy(synthetic_rgb(size, seed))[None]  # (1, 3, H, W) in [0, 1]
    x = spec.normalize(image)
    t0 = time.perf_counter()
    with torch.inference_mode():
        ((patches, cls),) = model.get_intermediate_layers(x, n=1, reshape=True, return_class_token=True)
    seconds = time.perf_counter() - t0
    flat = patches[0].flatten(1).T.double()  # (P, D)
    flat = flat - flat.mean(0)
    s = torch.linalg.svdvals(flat) ** 2
    explained = tuple(float(v) for v in (s[:3] / s.sum()))
    info = model.weights_info
    return DemoReport(
        model=spec.name,
        weights=info.source if info else RANDOM,
        random_weights=bool(info is None or info.is_random),
        params=sum(p.numel() for p in model.parameters()),
        input_shape=tuple(x.shape),
        patch_features_shape=tuple(patches.shape),
        cls_shape=tuple(cls.shape),
        seconds=seconds,
        pca_explained=explained,
    )
