"""CHMv2 canopy height: the backbone + DPT decoder model, and loading and saving its weights.

The head's :class:`~geodino.heads.specs.HeadSpec` (CHMv2's own mean/std, which differ from the SAT
backbone's in the red mean, and its provenance) lives in :mod:`geodino.heads.specs`; the backbone comes
from its own :class:`~geodino.models.WeightsSpec`. Tensor contract of :class:`CanopyHeightModel`:
``(B, 3, H, W)`` normalised, ``H`` and ``W`` multiples of 16 -> ``(B, 1, H, W)`` metres.

Weights: Meta ships the head alone (``dinov3_vitl16_chmv2_dpt_head-3703d643.pth``, loaded strictly
into the decoder) next to the SAT-493M backbone file; Hugging Face ships both in one folder
(``facebook/dinov3-vitl16-chmv2-dpt-head``). :func:`build_canopy_model` reads either.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geodino.errors import InputError, WeightsError
from geodino.heads.chmv2_keys import (
    HF_BACKBONE_PREFIX,
    HF_HEAD_PREFIX,
    check_head_fit,
    check_hf_config,
    has_hf_backbone,
    head_hf_to_meta,
    head_meta_to_hf,
    hf_chmv2_config,
    is_hf_head,
)
from geodino.heads.dpt import ConvUnit, DPTDecoder, bins_to_metres, mixlog_bins
from geodino.heads.specs import HEADS, HeadSpec, get_head
from geodino.models.checkpoint import first_nonfinite, read_checkpoint
from geodino.models.keymap import meta_to_hf
from geodino.models.loader import build_model, model_from_state_dict
from geodino.models.pretrained import official_spec_of
from geodino.models.provenance import RANDOM, WeightsInfo, verify_hash
from geodino.models.specs import REGISTRY, WeightsSpec
from geodino.models.store import find_weights
from geodino.models.vit import DinoVisionTransformer
from geodino.steps import step

log = logging.getLogger(__name__)


class CanopyHeightModel(nn.Module):
    """Backbone + DPT decoder: ``(B, 3, H, W)`` normalised with ``spec.normalize`` -> ``(B, 1, H, W)`` metres.

    Where the patch grid has an odd side the decoder's map is one patch larger along it; it is
    resized to ``(H, W)`` (bilinear, corners aligned, as transformers' CHMv2 post-processing does).
    """

    def __init__(self, spec: HeadSpec, backbone: DinoVisionTransformer, decoder: DPTDecoder) -> None:
        super().__init__()
        self.spec = spec
        self.backbone = backbone
        self.decoder = decoder
        self.weights_info: dict[str, object] = {}

    def logits(self, x: Tensor) -> Tensor:
        """``(B, 3, H, W) -> (B, K, 32*ceil(H/32), 32*ceil(W/32))`` bin logits."""
        feats = self.backbone.get_intermediate_layers(x, n=list(self.spec.layers), reshape=True, return_class_token=True, norm=True)
        first = self.decoder.convs[0]
        assert isinstance(first, ConvUnit)
        dtype = first.conv.weight.dtype
        return self.decoder([(patches.to(dtype), cls.to(dtype)) for patches, cls in feats])

    def forward(self, x: Tensor) -> Tensor:
        logits = self.logits(x)
        heights = bins_to_metres(logits, mixlog_bins(self.spec.n_bins, self.spec.min_depth, self.spec.max_depth, logits.device))
        if heights.shape[-2:] != x.shape[-2:]:
            heights = F.interpolate(heights, size=x.shape[-2:], mode="bilinear", align_corners=True)
        return heights


def build_canopy_model(
    head: str | HeadSpec = "dinov3_vitl16_chmv2",
    weights: str | Path | None = None,
    backbone_weights: str | Path | None = None,
    *,
    seed: int = 0,
    check_hash: bool = True,
    cache: str | Path | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> CanopyHeightModel:
    """Build ``head`` in eval mode with its backbone.

    ``weights``: a Meta head ``.pth`` (decoder only: the backbone then comes from ``backbone_weights``,
    resolved like :func:`~geodino.models.build_model`), a Hugging Face folder or ``.safetensors`` with
    backbone and head (both come from it), ``"random"`` (the backbone too unless ``backbone_weights``
    says otherwise), or ``None``: ``$GEODINO_WEIGHTS`` and the cache (random-only specs fall back to random).
    """
    spec = get_head(head)
    if weights is None:
        try:
            weights = find_weights(spec, None, cache)
        except WeightsError:
            if not spec.random_only:
                raise
            weights = RANDOM
    backbone: DinoVisionTransformer | None = None
    if weights == RANDOM:
        decoder = DPTDecoder.random(spec.decoder, seed)
        head_info = WeightsInfo(spec.name, RANDOM, RANDOM, seed=seed)
        backbone_weights = backbone_weights or RANDOM
    else:
        path = find_weights(spec, weights, cache)
        decoder, backbone_sd, config, head_info = _load_head(spec, path, check_hash)
        if backbone_sd is not None:
            if backbone_weights is not None:
                raise InputError(f"{path.name} holds a backbone already: leave backbone_weights unset")
            backbone = _backbone_from_hf(spec.backbone_spec, backbone_sd, config, path, dtype)
    if backbone is None:
        backbone = build_model(spec.backbone_spec, backbone_weights, cache=cache, check_hash=check_hash, seed=seed, dtype=dtype)
    model = CanopyHeightModel(spec, backbone, decoder.to(dtype))
    bb_info = backbone.weights_info
    assert bb_info is not None
    model.weights_info = {"head": head_info.as_dict(), "backbone": bb_info.as_dict(), "random": head_info.is_random or bb_info.is_random}
    return model.eval().to(device)


def official_head_of(path: str | Path) -> HeadSpec | None:
    """The head spec whose official file name ``path`` carries, if any."""
    return official_spec_of(path, HEADS.values())


def _load_head(spec: HeadSpec, path: Path, check_hash: bool) -> tuple[DPTDecoder, dict[str, Tensor] | None, dict | None, WeightsInfo]:
    """Decoder from a Meta head file or a Hugging Face CHMv2 file/folder; plus the HF backbone keys, if any."""
    official = official_head_of(path)
    if official is not None and official.name != spec.name:
        raise WeightsError(f"{path.name} is the official head checkpoint of {official.name}, not of {spec.name}")
    if (backbone := official_spec_of(path, REGISTRY.values())) is not None:
        raise WeightsError(
            f"{path.name} is the backbone checkpoint of {backbone.name}: pass it as backbone_weights, the head file as weights"
        )
    with step(log, "loading %s head weights from %s", spec.name, path):
        verified = verify_hash(path) if check_hash and path.is_file() else None
        sd, _, config = read_checkpoint(path)
    backbone_sd = None
    layout = "hf" if is_hf_head(sd) else "meta"
    named = {k: v for k, v in sd.items() if k.startswith(HF_HEAD_PREFIX)} if layout == "hf" else sd  # the file's key names
    if layout == "hf":
        if config is not None:
            check_hf_config(config, spec, path.name)
        if has_hf_backbone(sd):
            backbone_sd = {k: v for k, v in sd.items() if k.startswith(HF_BACKBONE_PREFIX)}
        sd = head_hf_to_meta(sd)
    with torch.device("meta"):
        decoder = DPTDecoder(spec.decoder)
    check_head_fit(sd, {k: v.shape for k, v in decoder.state_dict().items()}, spec, path.name)
    if (bad := first_nonfinite(named)) is not None:
        raise WeightsError(f"checkpoint {path.name}: tensor '{bad}' holds NaN/inf values (a corrupt file or a diverged training run)")
    decoder.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True, assign=True)
    return decoder, backbone_sd, config, WeightsInfo(spec.name, str(path), layout, hash_verified=verified)


def _backbone_from_hf(
    spec: WeightsSpec, sd: dict[str, Tensor], config: dict | None, path: Path, dtype: torch.dtype
) -> DinoVisionTransformer:
    """The backbone of a Hugging Face CHMv2 state dict (``backbone.*`` keys), checked like a backbone file."""
    model = model_from_state_dict(spec, sd, "hf", (config or {}).get("backbone_config"), path.name, dtype)
    model.spec = spec
    model.weights_info = WeightsInfo(spec.name, str(path), "hf")
    return model.eval()


def save_canopy_model(model: CanopyHeightModel, path: str | Path, layout: str = "meta") -> Path:
    """Write ``model``'s weights: ``"meta"``, the decoder alone as Meta's head ``.pth``; ``"hf"``, a folder
    (``config.json`` + ``model.safetensors``, backbone and head) loadable by ``CHMv2ForDepthEstimation``."""
    path = Path(path)
    head_sd = {k: v.detach().cpu().contiguous() for k, v in model.decoder.state_dict().items()}
    if layout == "meta":
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(head_sd, path)
    elif layout == "hf":
        from safetensors.torch import save_file

        path.mkdir(parents=True, exist_ok=True)
        backbone_sd = {k: v.detach().cpu() for k, v in model.backbone.state_dict().items()}
        sd = {HF_BACKBONE_PREFIX + k: v for k, v in meta_to_hf(backbone_sd).items()}
        sd.update(head_meta_to_hf(head_sd))
        (path / "config.json").write_text(json.dumps(hf_chmv2_config(model.spec), indent=2))
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path / "model.safetensors"))
    else:
        raise InputError(f"layout must be 'meta' or 'hf', not {layout!r}")
    return path
