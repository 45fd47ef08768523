"""Reading, verifying and matching DINOv3 checkpoints (Meta ``.pth`` and Hugging Face safetensors).

Every file is read with ``torch.load(..., weights_only=True)`` or safetensors; nothing is unpickled.
All failures surface as one :class:`WeightsError` sentence naming the file, the spec and the cause.
"""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import torch
from torch import Tensor

from geodino.errors import WeightsError
from geodino.models.keymap import HF_CONFIG_CHECKED, StateDict, hf_config, hf_to_meta
from geodino.models.layers import canonical_bias_mask, default_periods
from geodino.models.provenance import hash_in_name as hash_in_name  # re-exported: hashing lives in provenance
from geodino.models.provenance import sha256_file as sha256_file
from geodino.models.specs import REGISTRY, ArchSpec, WeightsSpec
from geodino.models.vit import DinoVisionTransformer

_WRAPPERS = ("model", "teacher", "state_dict", "model_state_dict")


def _unwrap(obj: object, path: Path) -> StateDict:
    if isinstance(obj, dict):
        for key in _WRAPPERS:
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: not a state dict of tensors (a flat Meta or Hugging Face checkpoint is expected)")
    sd = {str(k): v for k, v in obj.items()}
    if any(k.startswith("backbone.") for k in sd):  # training checkpoints nest the ViT under backbone.
        sd = {k[len("backbone.") :]: v for k, v in sd.items() if k.startswith("backbone.")}
    return sd


def _read_safetensors(path: Path) -> StateDict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise WeightsError(f"{path}: safetensors file not found")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{path}: cannot read safetensors file, it is truncated or corrupt ({_first_line(exc)})") from None


def _read_json(path: Path) -> dict | None:
    """A JSON object file beside the weights (``config.json``, the shard index), None when absent."""
    if not path.exists():
        return None
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise WeightsError(f"{path}: not a valid JSON file ({_first_line(exc)})") from None
    if not isinstance(obj, dict):
        raise WeightsError(f"{path}: must hold a JSON object, not a {type(obj).__name__}")
    return obj


def _read_hf_dir(path: Path) -> tuple[StateDict, dict | None]:
    config = _read_json(path / "config.json")
    index = _read_json(path / "model.safetensors.index.json")
    if index is not None:
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map or not all(isinstance(v, str) for v in weight_map.values()):
            raise WeightsError(f"{path / 'model.safetensors.index.json'}: needs a weight_map of tensor names to shard files")
        sd: StateDict = {}
        for shard in sorted(set(weight_map.values())):
            sd.update(_read_safetensors(path / shard))
        return sd, config
    files = sorted(path.glob("*.safetensors"))
    if len(files) == 1:
        return _read_safetensors(files[0]), config
    raise WeightsError(f"{path}: a Hugging Face model folder needs model.safetensors (or an index), found {len(files)} safetensors files")


def read_checkpoint(path: str | Path) -> tuple[StateDict, str, dict | None]:
    """Read a checkpoint file or Hugging Face folder: ``(state_dict, layout, hf_config)``,
    layout ``"meta"`` or ``"hf"``; tensors stay in the file's dtype, on the CPU."""
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"weights not found: {path}")
    config = None
    if path.is_dir():
        sd, config = _read_hf_dir(path)
    elif path.suffix == ".safetensors":
        sd = _read_safetensors(path)
        config = _read_json(path.with_name("config.json"))
    else:
        try:  # mmap keeps a 7B checkpoint out of RAM until used; only zip-format files support it
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
        except Exception as exc:  # truncated zip, pickle errors, EOF, globals refused by weights_only
            raise WeightsError(
                f"{path}: cannot read checkpoint, the file is truncated or not a PyTorch file ({_first_line(exc)})"
            ) from None
        sd = _unwrap(obj, path)
    layout = "hf" if any(k.endswith("embeddings.cls_token") for k in sd) else "meta"
    return sd, layout, config


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:160] if text else type(exc).__name__


def describe_state_dict(sd: StateDict) -> tuple[str, list[str]]:
    """Guess a Meta-layout state dict's architecture: ``(description, names of specs that fit)``."""
    if "cls_token" not in sd or "patch_embed.proj.weight" not in sd:
        return "not a DINOv3 ViT state dict", []
    dim = sd["cls_token"].shape[-1]
    depth = 1 + max((int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))), default=-1)
    ffn = "swiglu" if "blocks.0.mlp.w1.weight" in sd else "mlp"
    qkv_bias = "blocks.0.attn.qkv.bias" in sd
    local = "local_cls_norm.weight" in sd
    fits = [n for n, s in REGISTRY.items() if _fits(s.arch, dim, depth, ffn, qkv_bias) and s.arch.untie_local_cls_norm == local]
    if not fits:  # local_cls_norm alone does not decide the architecture
        fits = [n for n, s in REGISTRY.items() if _fits(s.arch, dim, depth, ffn, qkv_bias)]
    what = f"embed_dim {dim}, {depth} blocks, {ffn} FFN, qkv bias {qkv_bias}, local_cls_norm {local}"
    return what, fits


def _fits(arch: ArchSpec, dim: int, depth: int, ffn: str, qkv_bias: bool) -> bool:
    return arch.embed_dim == dim and arch.depth == depth and (arch.ffn == "mlp") == (ffn == "mlp") and arch.qkv_bias == qkv_bias


def to_meta_layout(sd: StateDict, layout: str, spec: WeightsSpec, config: dict | None, source: str) -> StateDict:
    """Bring a checkpoint into Meta's layout for ``spec``, checking a HF config against the spec."""
    if layout == "meta":
        return sd
    if config is not None:
        want = hf_config(spec.arch)
        bad = [f"{k}={config.get(k)} (spec: {want[k]})" for k in HF_CONFIG_CHECKED if k in config and config[k] != want[k]]
        if bad:
            raise WeightsError(f"{source} does not fit {spec.name}: its config.json has {', '.join(bad)}")
    try:
        return hf_to_meta(sd, spec.arch)
    except KeyError as exc:
        raise WeightsError(f"{source} does not fit {spec.name}: {exc.args[0]}") from None


def complete_state_dict(sd: StateDict, arch: ArchSpec) -> StateDict:
    """Fill what a Meta checkpoint may lack or carry wrongly: ``bias_mask`` (absent, or NaN as the
    reference initialises it) and ``rope_embed.periods`` (absent; kept in fp32 when present)."""
    sd = dict(sd)
    for key, t in list(sd.items()):
        if key.endswith("attn.qkv.bias") and arch.mask_k_bias:
            sd[key[: -len("bias")] + "bias_mask"] = canonical_bias_mask(t.shape[0])
    sd.setdefault("rope_embed.periods", default_periods(arch.head_dim, arch.rope_base))
    sd["rope_embed.periods"] = sd["rope_embed.periods"].float()
    return sd


def first_nonfinite(sd: StateDict, skip: tuple[str, ...] = ()) -> str | None:
    """The first floating-point tensor of ``sd`` holding NaN or inf (keys ending in ``skip`` aside), or None."""
    for key, t in sd.items():
        if key.endswith(skip) or not isinstance(t, Tensor) or not t.is_floating_point():
            continue
        if not bool(torch.isfinite(t).all()):
            return key
    return None


def check_finite(sd: StateDict, source: str) -> None:
    """Raise :class:`WeightsError` naming the first tensor with NaN/inf; ``bias_mask`` is skipped (always canonical)."""
    key = first_nonfinite(sd, skip=("bias_mask",))
    if key is not None:
        raise WeightsError(f"checkpoint {source}: tensor '{key}' holds NaN/inf values (a corrupt file or a diverged training run)")


def fit_problems(sd: StateDict, expected: dict[str, torch.Size]) -> list[str]:
    """Up to three missing, unexpected and wrong-shape keys each, as phrases; empty when ``sd`` fits exactly."""
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    wrong = [f"{k} {tuple(sd[k].shape)} vs {tuple(s)}" for k, s in expected.items() if k in sd and sd[k].shape != s]
    parts = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
        if keys:
            more = f", ... ({len(keys)} in all)" if len(keys) > 3 else ""
            parts.append(f"{label}: {', '.join(keys[:3])}{more}")
    return parts


def check_fit(sd: StateDict, expected: dict[str, torch.Size], spec: WeightsSpec, source: str) -> None:
    """Raise one clear :class:`WeightsError` unless ``sd`` has exactly the expected keys and shapes."""
    parts = fit_problems(sd, expected)
    if not parts:
        return
    what, fits = describe_state_dict(sd)
    if fits and spec.name not in fits:
        cause = f"it looks like a {what} checkpoint, which fits {', '.join(fits)}"
    elif fits:
        cause = "the file is incomplete or was saved from a modified model"
    else:
        cause = f"it is not a DINOv3 backbone checkpoint ({what})"
    raise WeightsError(f"{source} does not fit {spec.name}: {'; '.join(parts)}. Likely cause: {cause}")


def random_state_dict(spec: WeightsSpec, seed: int = 0, informative: bool = False) -> StateDict:
    """Random weights in Meta's layout, as an official checkpoint would store them.

    ``informative=True`` draws every parameter away from its initial value (LayerScale 0.02-0.3,
    norms around 1, non-zero biases including the masked key bias) so that a comparison between
    implementations exercises every weight; the default mirrors the reference initialisation.
    """
    sd = {k: v.detach() for k, v in DinoVisionTransformer.random(spec.arch, seed).state_dict().items()}
    if informative:
        g = torch.Generator().manual_seed(seed + 1)
        for key, t in sd.items():
            if key.endswith("bias_mask") or key == "rope_embed.periods":
                continue
            if key.endswith(".gamma"):
                t.copy_(0.02 + 0.28 * torch.rand(t.shape, generator=g))
            elif "norm" in key and key.endswith(".weight"):
                t.copy_(1.0 + 0.1 * torch.randn(t.shape, generator=g))
            elif key.endswith(".bias") or key in ("mask_token", "cls_token", "storage_tokens"):
                t.copy_((0.1 if "norm" in key else 0.02) * torch.randn(t.shape, generator=g))
    return sd
