"""The DINOv3 Vision Transformer, with the reference's state-dict layout and output API.

Tensor contract: ``(B, 3, H, W)`` normalised float images, ``H`` and ``W`` multiples of 16,
map to ``(B, D, H/16, W/16)`` patch features. Token order is ``[CLS, 4 storage, H/16*W/16 patches]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from geodino.errors import InputError
from geodino.models.layers import (
    Block,
    LinearKMaskedBias,
    Mlp,
    PatchEmbed,
    RopePositionEmbedding,
    SwiGLUFFN,
    canonical_bias_mask,
    default_periods,
    pad_rope,
)
from geodino.models.provenance import WeightsInfo
from geodino.models.specs import ArchSpec, WeightsSpec

LayerOutput = Tensor | tuple[Tensor, ...]


class DinoVisionTransformer(nn.Module):
    """DINOv3 ViT for inference. Build it from an :class:`ArchSpec`; load weights with
    :func:`geodino.models.load_model` or :func:`geodino.models.load_state_dict`.

    A side that is not a multiple of the patch size raises :class:`InputError`: the reference
    silently crops the remainder, which would shift features against the map, so geodino refuses.
    """

    def __init__(self, arch: ArchSpec) -> None:
        super().__init__()
        self.arch = arch
        self.spec: WeightsSpec | None = None  # set by build_model
        self.weights_info: WeightsInfo | None = None
        dim = arch.embed_dim
        self.patch_size = arch.patch_size
        self.n_storage_tokens = arch.n_storage_tokens
        self.patch_embed = PatchEmbed(arch.in_chans, dim, arch.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        if arch.n_storage_tokens > 0:
            self.storage_tokens = nn.Parameter(torch.zeros(1, arch.n_storage_tokens, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, dim))
        self.rope_embed = RopePositionEmbedding(arch.head_dim, arch.rope_base)
        ffn_cls = Mlp if arch.ffn == "mlp" else SwiGLUFFN
        self.blocks = nn.ModuleList(
            Block(
                dim,
                arch.num_heads,
                ffn_cls(dim, arch.ffn_hidden),
                qkv_bias=arch.qkv_bias,
                mask_k_bias=arch.mask_k_bias,
                layerscale_init=arch.layerscale_init,
                norm_eps=arch.norm_eps,
            )
            for _ in range(arch.depth)
        )
        self.norm = nn.LayerNorm(dim, eps=arch.norm_eps)
        if arch.untie_local_cls_norm:
            # Present in SAT ViT-L and 7B checkpoints; used only for local crops in training.
            self.local_cls_norm = nn.LayerNorm(dim, eps=arch.norm_eps)
        self.head = nn.Identity()

    @property
    def embed_dim(self) -> int:
        return self.arch.embed_dim

    @torch.no_grad()
    def init_weights(self, seed: int = 0) -> DinoVisionTransformer:
        """Random weights shaped like the reference initialisation: N(0, 0.02) clipped at two sigma
        for linear, conv and token weights, zero biases and mask token, unit norms, LayerScale 1e-5."""
        g = torch.Generator().manual_seed(seed)

        def normal_(t: Tensor) -> None:
            t.copy_(torch.empty(t.shape).normal_(0.0, 0.02, generator=g).clamp_(-0.04, 0.04))

        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                normal_(m.weight)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.LayerNorm):
                m.weight.fill_(1.0)
                m.bias.zero_()
        normal_(self.cls_token)
        if self.n_storage_tokens:
            normal_(self.storage_tokens)
        self.mask_token.zero_()
        for blk in self.blocks:
            assert isinstance(blk, Block)
            blk.ls1.gamma.fill_(self.arch.layerscale_init)
            blk.ls2.gamma.fill_(self.arch.layerscale_init)
            if isinstance(blk.attn.qkv, LinearKMaskedBias):
                blk.attn.qkv.bias_mask.copy_(canonical_bias_mask(blk.attn.qkv.out_features))
        self.rope_embed.periods.copy_(default_periods(self.arch.head_dim, self.arch.rope_base))
        return self

    @classmethod
    def random(cls, arch: ArchSpec, seed: int = 0) -> DinoVisionTransformer:
        """A model with :meth:`init_weights` random weights, allocated once (no default init pass)."""
        with torch.device("meta"):
            model = cls(arch)
        return model.to_empty(device="cpu").init_weights(seed)

    # -- tokens ---------------------------------------------------------------------------
    def _check_input(self, x: Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.arch.in_chans:
            raise InputError(f"expected images of shape (B, {self.arch.in_chans}, H, W), got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        p = self.patch_size
        if h % p or w % p:
            raise InputError(
                f"input of {h}x{w} pixels: height and width must be multiples of the patch size {p} "
                f"(crop to {h // p * p}x{w // p * p} or pad to {-(-h // p) * p}x{-(-w // p) * p})"
            )
        if not x.is_floating_point():
            raise InputError(f"expected normalised float images, got dtype {x.dtype}")

    def prepare_tokens(self, x: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor], tuple[int, int]]:
        """``(B, C, H, W) -> (B, 1+S+P, D)`` tokens, RoPE ``(sin, cos)`` padded to all tokens ``(N, d)``
        and the patch grid ``(h, w)``."""
        self._check_input(x)
        b = x.shape[0]
        grid = (x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size)
        patches = self.patch_embed(x.to(self.patch_embed.proj.weight.dtype))  # (B, P, D)
        parts = [self.cls_token.expand(b, -1, -1)]
        if self.n_storage_tokens:
            parts.append(self.storage_tokens.expand(b, -1, -1))
        tokens = torch.cat([*parts, patches.to(self.cls_token.dtype)], dim=1)
        sin, cos = self.rope_embed(*grid)
        rope = pad_rope(sin, cos, self.arch.n_prefix_tokens)  # (N, d) each
        return tokens, rope, grid

    def _run_blocks(self, x: Tensor, keep: Sequence[int] = ()) -> tuple[Tensor, dict[int, Tensor], tuple[int, int]]:
        """Run blocks up to the last one needed; return the final state, the kept block outputs and the grid."""
        tokens, rope, grid = self.prepare_tokens(x)
        n_prefix = self.arch.n_prefix_tokens
        last = len(self.blocks) - 1 if not keep else max(keep)
        kept: dict[int, Tensor] = {}
        for i, blk in enumerate(self.blocks[: last + 1]):
            tokens = blk(tokens, rope, n_prefix)
            if i in keep:
                kept[i] = tokens
        return tokens, kept, grid

    # -- public API (mirrors the reference) -----------------------------------------------
    def forward_features(self, x: Tensor) -> dict[str, Tensor | None]:
        """``(B, C, H, W)`` -> dict of ``x_norm_clstoken`` (B, D), ``x_storage_tokens`` (B, S, D),
        ``x_norm_patchtokens`` (B, P, D), ``x_prenorm`` (B, N, D) and ``masks`` (None)."""
        prenorm, _, _ = self._run_blocks(x)
        normed = self.norm(prenorm)
        s = self.n_storage_tokens
        return {
            "x_norm_clstoken": normed[:, 0],
            "x_storage_tokens": normed[:, 1 : s + 1],
            "x_norm_patchtokens": normed[:, s + 1 :],
            "x_prenorm": prenorm,
            "masks": None,
        }

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, D)``: the normed CLS token (the reference's ``head`` is Identity)."""
        return self.head(self.forward_features(x)["x_norm_clstoken"])

    def resolve_layers(self, n: int | Sequence[int]) -> list[int]:
        """An int means the last ``n`` blocks, a sequence means 0-based block indexes (negatives allowed)."""
        depth = len(self.blocks)
        if isinstance(n, int):
            if not 1 <= n <= depth:
                raise InputError(f"n={n}: this model has {depth} blocks")
            return list(range(depth - n, depth))
        out = []
        for i in n:
            j = i + depth if i < 0 else i
            if not 0 <= j < depth:
                raise InputError(f"block index {i} out of range for a model with {depth} blocks")
            out.append(j)
        return out

    def get_intermediate_layers(
        self,
        x: Tensor,
        n: int | Sequence[int] = 1,
        reshape: bool = False,
        return_class_token: bool = False,
        return_extra_tokens: bool = False,
        norm: bool = True,
    ) -> tuple[LayerOutput, ...]:
        """Patch tokens of chosen blocks, one entry per block in the order asked.

        Each entry is ``(B, P, D)``, or ``(B, D, h, w)`` with ``reshape``; with ``return_class_token``
        and/or ``return_extra_tokens`` it is a tuple ``(patches, [cls (B, D)], [storage (B, S, D)])``.
        """
        layers = self.resolve_layers(n)
        _, kept, (h, w) = self._run_blocks(x, keep=layers)
        s = self.n_storage_tokens
        results: list[LayerOutput] = []
        for i in layers:
            out = self.norm(kept[i]) if norm else kept[i]
            patches = out[:, s + 1 :]
            if reshape:
                patches = patches.reshape(out.shape[0], h, w, -1).permute(0, 3, 1, 2).contiguous()
            extras = ([out[:, 0]] if return_class_token else []) + ([out[:, 1 : s + 1]] if return_extra_tokens else [])
            results.append((patches, *extras) if extras else patches)
        return tuple(results)
