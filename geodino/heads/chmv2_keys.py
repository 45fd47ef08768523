"""Key names and configs of the CHMv2 head: Meta's layout <-> Hugging Face ``CHMv2ForDepthEstimation``'s.

Meta's head file is the decoder alone (``reassemble_blocks.*``, ``convs.*``, ``fusion_blocks.*``,
``conv_depth.*``); a Hugging Face model holds the backbone under ``backbone.`` (``DINOv3ViTBackbone``,
the same names as ``DINOv3ViTModel``) and the decoder under ``head.``. Also here: the ``config.json``
of an HF export, its consistency check, and the one-sentence error for a head file that does not fit.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor

from geodino.errors import WeightsError
from geodino.heads.dpt import RESIZE_FACTORS
from geodino.heads.specs import HEADS, HeadSpec
from geodino.models.checkpoint import fit_problems
from geodino.models.keymap import hf_config

StateDict = dict[str, Tensor]
HF_HEAD_PREFIX = "head."
HF_BACKBONE_PREFIX = "backbone."
MIXLOG = "chmv2_mixlog"

#: Meta <-> Hugging Face head names, one pair per layer kind; ``{}`` stands for a layer index. Both
#: directions are generated from this one table.
_NAME_PAIRS = [
    ("reassemble_blocks.projects.{}.conv.", "reassemble_stage.layers.{}.projection."),
    ("reassemble_blocks.resize_layers.{}.", "reassemble_stage.layers.{}.resize."),
    ("reassemble_blocks.readout_projects.{}.0.", "reassemble_stage.readout_projects.{}.0."),
    ("convs.{}.conv.", "convs.{}."),
    ("fusion_blocks.{}.project.conv.", "fusion_layers.{}.projection."),
    ("fusion_blocks.{}.res_conv_unit{}.conv{}.conv.", "fusion_layers.{}.residual_layer{}.convolution{}."),
    ("conv_depth.head.{}.", "conv_depth.head.{}."),
]


def _table(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``(from, to)`` templates -> ``(regex, replacement)``: each ``{}`` captures digits and is put back in order."""
    out = []
    for src, dst in pairs:
        pattern = "^" + r"(\d+)".join(re.escape(part) for part in src.split("{}"))
        first, *rest = dst.split("{}")
        out.append((pattern, first + "".join(rf"\{i}" + part for i, part in enumerate(rest, 1))))
    return out


_META_TO_HF = _table(_NAME_PAIRS)
_HF_TO_META = _table([(hf, meta) for meta, hf in _NAME_PAIRS])


def _rename(key: str, table: list[tuple[str, str]], source: str) -> str:
    for pattern, repl in table:
        new, count = re.subn(pattern, repl, key)
        if count:
            return new
    raise KeyError(f"no {source} name for head key '{key}'")


def head_meta_to_hf(sd: StateDict) -> StateDict:
    """Meta's decoder keys -> ``CHMv2ForDepthEstimation``'s ``head.*`` keys. Unknown keys raise ``KeyError``."""
    return {HF_HEAD_PREFIX + _rename(k, _META_TO_HF, "Hugging Face"): v for k, v in sd.items()}


def head_hf_to_meta(sd: StateDict) -> StateDict:
    """The ``head.*`` keys of a Hugging Face CHMv2 state dict -> Meta's decoder keys (other keys are ignored)."""
    n = len(HF_HEAD_PREFIX)
    return {_rename(k[n:], _HF_TO_META, "Meta"): v for k, v in sd.items() if k.startswith(HF_HEAD_PREFIX)}


def is_hf_head(sd: StateDict) -> bool:
    """Whether ``sd`` holds a CHMv2 head in Hugging Face names."""
    return any(k.startswith(("head.reassemble_stage.", "head.fusion_layers.")) for k in sd)


def has_hf_backbone(sd: StateDict) -> bool:
    return any(k.startswith(HF_BACKBONE_PREFIX) for k in sd)


def hf_chmv2_config(spec: HeadSpec) -> dict[str, object]:
    """``config.json`` of a Hugging Face export of ``spec`` (``CHMv2Config``), every backbone field spelled out.

    The backbone's ``layer_norm_eps`` is written explicitly: ``CHMv2Config()`` without a backbone config
    defaults to 1e-6 (and a key bias), while Meta's ViT, hence the released weights, uses 1e-5.
    """
    arch = spec.backbone_spec.arch
    backbone = {
        "model_type": "dinov3_vit",
        **hf_config(arch),
        "layer_norm_eps": arch.norm_eps,
        "key_bias": False,
        "out_indices": [i + 1 for i in spec.layers],  # hidden_states[0] is the embedding output
        "apply_layernorm": True,
        "reshape_hidden_states": True,
        "return_class_token": True,
    }
    dec = spec.decoder
    return {
        "model_type": "chmv2",
        "architectures": ["CHMv2ForDepthEstimation"],
        "backbone_config": backbone,
        "patch_size": arch.patch_size,
        "reassemble_factors": list(RESIZE_FACTORS),
        "post_process_channels": list(dec.post_process_channels),
        "fusion_hidden_size": dec.channels,
        "head_hidden_size": dec.n_hidden_channels,
        "number_output_channels": dec.n_bins,
        "readout_type": "project",
        "min_depth": spec.min_depth,
        "max_depth": spec.max_depth,
        "bins_strategy": MIXLOG,
        "norm_strategy": MIXLOG,
    }


_CHECKED = ("post_process_channels", "fusion_hidden_size", "head_hidden_size", "number_output_channels", "readout_type",
            "reassemble_factors", "min_depth", "max_depth", "bins_strategy", "norm_strategy")  # fmt: skip


def check_hf_config(config: dict, spec: HeadSpec, source: str) -> None:
    """Raise one :class:`WeightsError` when a CHMv2 ``config.json`` disagrees with ``spec``."""
    want = hf_chmv2_config(spec)
    bad = [f"{k}={config[k]} (spec: {want[k]})" for k in _CHECKED if k in config and config[k] != want[k]]
    have, layers = (config.get("backbone_config") or {}).get("out_indices"), [i + 1 for i in spec.layers]
    if have is not None and list(have) != layers:
        bad.append(f"out_indices={have} (spec: {layers})")
    if bad:
        raise WeightsError(f"{source} does not fit {spec.name}: its config.json has {', '.join(bad)}")


def describe_head(sd: StateDict) -> tuple[str, list[str]]:
    """Guess what a Meta-layout state dict is: ``(description, names of head specs that fit)``."""
    if "cls_token" in sd or "patch_embed.proj.weight" in sd:
        return "a DINOv3 backbone checkpoint (pass it as backbone_weights)", []
    try:
        dim = sd["reassemble_blocks.readout_projects.0.0.weight"].shape[0]  # Linear(2D, D)
        channels = tuple(sd[f"reassemble_blocks.projects.{i}.conv.weight"].shape[0] for i in range(len(RESIZE_FACTORS)))
        fusion = sd["convs.0.conv.weight"].shape[0]
    except KeyError:
        return "not a CHMv2 DPT head checkpoint", []
    last = sd.get("conv_depth.head.4.weight")
    n_bins = None if last is None else last.shape[0]
    fits = [
        n
        for n, h in HEADS.items()
        if (h.embed_dim, h.decoder.post_process_channels, h.decoder.channels) == (dim, channels, fusion) and n_bins in (None, h.n_bins)
    ]
    bins = "" if n_bins is None else f", {n_bins} bins"
    return f"a DPT head for a {dim}-dim backbone (channels {list(channels)}, fusion {fusion}{bins})", fits


def check_head_fit(sd: StateDict, expected: dict[str, torch.Size], spec: HeadSpec, source: str) -> None:
    """Raise one clear :class:`WeightsError` unless ``sd`` has exactly the decoder's keys and shapes."""
    parts = fit_problems(sd, expected)
    if not parts:
        return
    what, fits = describe_head(sd)
    if fits and spec.name not in fits:
        cause = f"it is {what}, which fits {', '.join(fits)}"
    elif fits:
        cause = "the file is incomplete or was saved from a modified model"
    else:
        cause = f"it is {what}"
    raise WeightsError(f"{source} does not fit {spec.name}: {'; '.join(parts)}. Likely cause: {cause}")
