"""Build a backbone by spec name, with random weights or a checkpoint; save checkpoints in either layout."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from geodino.errors import WeightsError
from geodino.models.checkpoint import (
    StateDict,
    check_finite,
    check_fit,
    complete_state_dict,
    read_checkpoint,
    to_meta_layout,
)
from geodino.models.keymap import hf_config, meta_to_hf
from geodino.models.pretrained import official_spec_of
from geodino.models.provenance import RANDOM, WeightsInfo, verify_hash
from geodino.models.specs import REGISTRY, WeightsSpec, get_spec
from geodino.models.store import find_weights
from geodino.models.vit import DinoVisionTransformer
from geodino.steps import step

log = logging.getLogger(__name__)


def build_model(
    spec: str | WeightsSpec,
    weights: str | Path | None = None,
    *,
    cache: str | Path | None = None,
    check_hash: bool = True,
    seed: int = 0,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> DinoVisionTransformer:
    """Build ``spec`` in eval mode, with weights from ``weights``.

    ``weights``: ``"random"`` (reference initialisation with ``seed``), a Meta ``.pth``, a ``.safetensors``
    file or a Hugging Face model folder; ``None`` looks in ``$GEODINO_WEIGHTS`` and the cache (random-only
    test specs fall back to random). The model carries ``.spec`` and ``.weights_info``.
    """
    spec = get_spec(spec)
    if weights is None and spec.random_only:
        try:
            weights = find_weights(spec, None, cache)
        except WeightsError:
            weights = RANDOM
    if weights == RANDOM:
        model = DinoVisionTransformer.random(spec.arch, seed)
        for param in model.parameters():  # buffers (RoPE periods, bias mask) stay fp32
            param.data = param.data.to(dtype)
        info = WeightsInfo(spec.name, RANDOM, RANDOM, seed=seed)
    else:
        path = find_weights(spec, weights, cache)
        model, info = load_checkpoint(spec, path, check_hash=check_hash, dtype=dtype)
    model.spec = spec
    model.weights_info = info
    return model.eval().to(device)


def load_checkpoint(
    spec: WeightsSpec, path: str | Path, check_hash: bool = True, dtype: torch.dtype = torch.float32
) -> tuple[DinoVisionTransformer, WeightsInfo]:
    """Load a checkpoint file or HF folder into a new model of ``spec`` (built on the meta device,
    so a 7B model needs its weights' memory once, not twice)."""
    path = Path(path)
    official = official_spec_of(path, REGISTRY.values())
    if official is not None and official.file_stem != spec.file_stem:
        raise WeightsError(f"{path.name} is the official checkpoint of {official.name}, not of {spec.name}")
    with step(log, "loading %s weights from %s", spec.name, path):
        verified = verify_hash(path) if check_hash and path.is_file() else None
        sd, layout, config = read_checkpoint(path)
        model = model_from_state_dict(spec, sd, layout, config, path.name, dtype)
    return model, WeightsInfo(spec.name, str(path), layout, hash_verified=verified)


def model_from_state_dict(
    spec: WeightsSpec, sd: StateDict, layout: str, config: dict | None, source: str, dtype: torch.dtype = torch.float32
) -> DinoVisionTransformer:
    """A model of ``spec`` holding ``sd`` (Meta or HF layout), built on the meta device, checked key by key
    and for NaN/inf values."""
    meta = complete_state_dict(to_meta_layout(sd, layout, spec, config, source), spec.arch)
    with torch.device("meta"):
        model = DinoVisionTransformer(spec.arch)
    check_fit(meta, {k: v.shape for k, v in model.state_dict().items()}, spec, source)
    check_finite(sd, source)  # under the file's own key names; every tensor it holds is used, bar bias_mask
    sd = meta
    keep_fp32 = ("rope_embed.periods", "bias_mask")
    sd = {k: (v if k.endswith(keep_fp32) or not v.is_floating_point() else v.to(dtype)) for k, v in sd.items()}
    model.load_state_dict(sd, strict=True, assign=True)
    return model


def save_checkpoint(model: DinoVisionTransformer, path: str | Path, layout: str = "meta") -> Path:
    """Write ``model``'s weights as a Meta ``.pth`` file or a Hugging Face folder
    (``config.json`` + ``model.safetensors``, loadable by ``transformers.DINOv3ViTModel``)."""
    path = Path(path)
    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if layout == "meta":
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(sd, path)
    elif layout == "hf":
        from safetensors.torch import save_file

        path.mkdir(parents=True, exist_ok=True)
        cfg = {"model_type": "dinov3_vit", "architectures": ["DINOv3ViTModel"], **hf_config(model.arch)}
        (path / "config.json").write_text(json.dumps(cfg, indent=2))
        save_file(meta_to_hf(sd), str(path / "model.safetensors"))
    else:
        raise ValueError(f"layout must be 'meta' or 'hf', not {layout!r}")
    return path
