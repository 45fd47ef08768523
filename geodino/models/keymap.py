"""Key mapping between Meta's DINOv3 state-dict layout and Hugging Face ``DINOv3ViTModel``'s.

Meta keeps a fused ``attn.qkv``; Hugging Face splits it into ``q_proj/k_proj/v_proj`` and has no
key bias (it is masked to zero in Meta's model anyway). Tensors Hugging Face has no slot for
(``rope_embed.periods``, ``bias_mask``, ``local_cls_norm.*``, the masked key bias) are regenerated
canonically on the way back, or carried under :data:`EXTRA_PREFIX` with ``keep_extras=True`` so that
Meta -> HF -> Meta is bit-exact for any checkpoint.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor

from geodino.models.layers import canonical_bias_mask, default_periods
from geodino.models.specs import ArchSpec

StateDict = dict[str, Tensor]
EXTRA_PREFIX = "geodino_extra."

_META_TO_HF_RENAMES = [
    (r"^cls_token$", "embeddings.cls_token"),
    (r"^storage_tokens$", "embeddings.register_tokens"),
    (r"^patch_embed\.proj\.", "embeddings.patch_embeddings."),
    (r"^norm\.", "norm."),
    (r"^blocks\.(\d+)\.attn\.proj\.", r"model.layer.\1.attention.o_proj."),
    (r"^blocks\.(\d+)\.ls(\d)\.gamma$", r"model.layer.\1.layer_scale\2.lambda1"),
    (r"^blocks\.(\d+)\.norm(\d)\.", r"model.layer.\1.norm\2."),
    (r"^blocks\.(\d+)\.mlp\.fc1\.", r"model.layer.\1.mlp.up_proj."),
    (r"^blocks\.(\d+)\.mlp\.fc2\.", r"model.layer.\1.mlp.down_proj."),
    (r"^blocks\.(\d+)\.mlp\.w1\.", r"model.layer.\1.mlp.gate_proj."),
    (r"^blocks\.(\d+)\.mlp\.w2\.", r"model.layer.\1.mlp.up_proj."),
    (r"^blocks\.(\d+)\.mlp\.w3\.", r"model.layer.\1.mlp.down_proj."),
]
_QKV = re.compile(r"^blocks\.(\d+)\.attn\.qkv\.(weight|bias)$")
_NO_HF_SLOT = re.compile(r"^(rope_embed\.periods|local_cls_norm\..*|blocks\.\d+\.attn\.qkv\.bias_mask)$")


def _rename(key: str, table: list[tuple[str, str]]) -> str | None:
    for pattern, repl in table:
        new, count = re.subn(pattern, repl, key)
        if count:
            return new
    return None


def meta_to_hf(sd: StateDict, keep_extras: bool = False) -> StateDict:
    """Meta layout -> ``DINOv3ViTModel`` layout (transformers >= 5). Unknown keys raise ``KeyError``."""
    out: StateDict = {}
    for key, t in sd.items():
        if key == "mask_token":
            out["embeddings.mask_token"] = t.reshape(1, 1, -1)
        elif m := _QKV.match(key):
            i, kind = m.groups()
            q, k, v = t.chunk(3, dim=0)
            prefix = f"model.layer.{i}.attention."
            out[prefix + f"q_proj.{kind}"] = q.clone()
            out[prefix + f"v_proj.{kind}"] = v.clone()
            if kind == "weight":
                out[prefix + "k_proj.weight"] = k.clone()
            elif keep_extras:
                out[EXTRA_PREFIX + key] = t.clone()
        elif _NO_HF_SLOT.match(key):
            if keep_extras:
                out[EXTRA_PREFIX + key] = t
        elif (new := _rename(key, _META_TO_HF_RENAMES)) is not None:
            out[new] = t
        else:
            raise KeyError(f"no Hugging Face name for Meta key '{key}'")
    return out


_HF_TO_META_RENAMES = [
    (r"^embeddings\.cls_token$", "cls_token"),
    (r"^embeddings\.register_tokens$", "storage_tokens"),
    (r"^embeddings\.patch_embeddings\.", "patch_embed.proj."),
    (r"^norm\.", "norm."),
    (r"^layer\.(\d+)\.attention\.o_proj\.", r"blocks.\1.attn.proj."),
    (r"^layer\.(\d+)\.layer_scale(\d)\.lambda1$", r"blocks.\1.ls\2.gamma"),
    (r"^layer\.(\d+)\.norm(\d)\.", r"blocks.\1.norm\2."),
]
_HF_QKV = re.compile(r"^layer\.(\d+)\.attention\.([qkv])_proj\.(weight|bias)$")
_HF_MLP = re.compile(r"^layer\.(\d+)\.mlp\.(gate_proj|up_proj|down_proj)\.(weight|bias)$")


def strip_hf_prefix(sd: StateDict) -> StateDict:
    """Drop any wrapper prefix (``dinov3.``, ``backbone.``, ...) before ``embeddings.cls_token``
    and the ``model.`` of transformers 5 layer keys, so old and new HF files read the same."""
    anchor = next((k for k in sd if k.endswith("embeddings.cls_token")), None)
    if anchor is None:
        raise KeyError("not a Hugging Face DINOv3 state dict: no 'embeddings.cls_token' key")
    prefix = anchor[: -len("embeddings.cls_token")]
    out = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
    return {(k[len("model.") :] if k.startswith("model.layer.") else k): v for k, v in out.items()}


def hf_to_meta(sd: StateDict, arch: ArchSpec) -> StateDict:
    """``DINOv3ViTModel`` layout -> Meta layout, regenerating what HF does not store."""
    sd = strip_hf_prefix(sd)
    gated = arch.ffn != "mlp"
    mlp_names = {"gate_proj": "w1", "up_proj": "w2", "down_proj": "w3"} if gated else {"up_proj": "fc1", "down_proj": "fc2"}
    out: StateDict = {}
    qkv: dict[tuple[str, str], dict[str, Tensor]] = {}
    extras = {k[len(EXTRA_PREFIX) :]: v for k, v in sd.items() if k.startswith(EXTRA_PREFIX)}
    for key, t in sd.items():
        if key.startswith(EXTRA_PREFIX):
            continue
        if key == "embeddings.mask_token":
            out["mask_token"] = t.reshape(1, -1)
        elif m := _HF_QKV.match(key):
            i, which, kind = m.groups()
            qkv.setdefault((i, kind), {})[which] = t
        elif m := _HF_MLP.match(key):
            i, name, kind = m.groups()
            if name not in mlp_names:
                raise KeyError(f"'{key}' does not fit a {arch.ffn} FFN")
            out[f"blocks.{i}.mlp.{mlp_names[name]}.{kind}"] = t
        elif (new := _rename(key, _HF_TO_META_RENAMES)) is not None:
            out[new] = t
        else:
            raise KeyError(f"no Meta name for Hugging Face key '{key}'")
    for (i, kind), parts in sorted(qkv.items()):
        if kind == "bias":
            parts.setdefault("k", torch.zeros_like(parts["q"]))
        missing = {"q", "k", "v"} - parts.keys()
        if missing:
            raise KeyError(f"layer {i}: missing {sorted(missing)} projection {kind}")
        out[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
        if kind == "bias" and arch.mask_k_bias:
            out[f"blocks.{i}.attn.qkv.bias_mask"] = canonical_bias_mask(3 * parts["q"].shape[0])
    out["rope_embed.periods"] = default_periods(arch.head_dim, arch.rope_base)
    if arch.untie_local_cls_norm:
        out["local_cls_norm.weight"] = torch.ones(arch.embed_dim)
        out["local_cls_norm.bias"] = torch.zeros(arch.embed_dim)
    out.update(extras)  # exact originals when the HF dict carried them
    return out


def hf_config(arch: ArchSpec) -> dict[str, object]:
    """Keyword arguments of ``transformers.DINOv3ViTConfig`` describing ``arch``."""
    gated = arch.ffn != "mlp"
    return {
        "patch_size": arch.patch_size,
        "hidden_size": arch.embed_dim,
        "intermediate_size": arch.ffn_hidden,
        "num_hidden_layers": arch.depth,
        "num_attention_heads": arch.num_heads,
        "hidden_act": "silu" if gated else "gelu",
        "layer_norm_eps": arch.norm_eps,
        "rope_theta": arch.rope_base,
        "num_channels": arch.in_chans,
        "query_bias": arch.qkv_bias,
        "key_bias": False,
        "value_bias": arch.qkv_bias,
        "proj_bias": True,
        "mlp_bias": True,
        "use_gated_mlp": gated,
        "num_register_tokens": arch.n_storage_tokens,
        "layerscale_value": arch.layerscale_init,
    }


#: Fields of a HF config.json that must agree with the spec's architecture.
HF_CONFIG_CHECKED = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_register_tokens")
