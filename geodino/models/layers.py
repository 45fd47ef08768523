"""Building blocks of the DINOv3 ViT, with module and parameter names matching Meta's checkpoints.

Shapes: B batch, N tokens (prefix + patches), D embed dim, h heads, d head dim (D / h),
P patch tokens (H/16 * W/16).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class PatchEmbed(nn.Module):
    """``(B, C, H, W) -> (B, H/p * W/p, D)``: a stride-p convolution, flattened row-major."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class RopePositionEmbedding(nn.Module):
    """2-D rotary embedding with "separate" coordinate normalisation (patch centres in (-1, 1)).

    ``periods`` is a persistent buffer of shape ``(d/4,)`` so that a checkpoint's own values
    (possibly rounded through bf16 by the reference) are used rather than recomputed.
    """

    periods: Tensor

    def __init__(self, head_dim: int, base: float = 100.0) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.base = base
        self.register_buffer("periods", default_periods(head_dim, base), persistent=True)

    def forward(self, h: int, w: int) -> tuple[Tensor, Tensor]:
        """Return ``(sin, cos)``, each ``(h*w, d)`` in fp32, for an ``h x w`` patch grid."""
        dev = self.periods.device
        ch = torch.arange(0.5, h, device=dev, dtype=torch.float32) / h
        cw = torch.arange(0.5, w, device=dev, dtype=torch.float32) / w
        coords = torch.stack(torch.meshgrid(ch, cw, indexing="ij"), dim=-1).flatten(0, 1)  # (P, 2) as (y, x)
        coords = 2.0 * coords - 1.0
        angles = 2 * math.pi * coords[:, :, None] / self.periods.float()[None, None, :]  # (P, 2, d/4)
        angles = angles.flatten(1, 2).tile(2)  # (P, d): [y | x | y | x]
        return torch.sin(angles), torch.cos(angles)


def default_periods(head_dim: int, base: float = 100.0) -> Tensor:
    """RoPE periods ``base ** (2i / (d/2))`` for ``i < d/4``, in fp32: shape ``(d/4,)``."""
    return base ** (2 * torch.arange(head_dim // 4, dtype=torch.float32) / (head_dim // 2))


def _rotate_half(x: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: Tensor, sin: Tensor, cos: Tensor, n_prefix: int) -> Tensor:
    """Rotate the patch tokens of ``x`` (B, h, N, d); the first ``n_prefix`` tokens stay as they are.

    ``sin`` and ``cos`` are ``(P, d)`` for the P patch tokens, or ``(N, d)`` already padded for the
    prefix (see :func:`pad_rope`, which makes this one fused pass with no split or concatenation).
    The rotation runs in fp32 and is cast back to ``x``'s dtype, as in the reference.
    """
    if sin.shape[0] != x.shape[2]:
        sin, cos = pad_rope(sin, cos, n_prefix)
    p = x if x.dtype == torch.float32 else x.float()
    return torch.addcmul(p * cos, _rotate_half(p), sin).to(x.dtype)


def pad_rope(sin: Tensor, cos: Tensor, n_prefix: int) -> tuple[Tensor, Tensor]:
    """Extend ``(P, d)`` RoPE tables to ``(n_prefix + P, d)`` with the identity rotation (sin 0, cos 1)
    for the prefix tokens, which therefore pass through unchanged, bit for bit."""
    d = sin.shape[1]
    sin = torch.cat([sin.new_zeros(n_prefix, d), sin])
    cos = torch.cat([cos.new_ones(n_prefix, d), cos])
    return sin, cos


class LinearKMaskedBias(nn.Linear):
    """The fused qkv projection whose key bias is multiplied by ``bias_mask`` (zeros on the k third).

    The mask is a persistent buffer, as in Meta's checkpoints; geodino always sets it to the
    canonical pattern, so a checkpoint without it (or with the reference's NaN init) is safe.
    """

    bias_mask: Tensor

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias=bias)
        if bias:
            self.register_buffer("bias_mask", canonical_bias_mask(out_features), persistent=True)

    def forward(self, x: Tensor) -> Tensor:
        bias = self.bias * self.bias_mask.to(self.bias.dtype) if self.bias is not None else None
        return F.linear(x, self.weight, bias)


def canonical_bias_mask(out_features: int) -> Tensor:
    """Ones, with zeros on ``[o//3 : 2*o//3]`` (the key third of a fused qkv bias)."""
    mask = torch.ones(out_features)
    mask[out_features // 3 : 2 * out_features // 3] = 0.0
    return mask


class SelfAttention(nn.Module):
    """Multi-head self-attention with RoPE on patch tokens: ``(B, N, D) -> (B, N, D)``."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, mask_k_bias: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        linear = LinearKMaskedBias if (mask_k_bias and qkv_bias) else nn.Linear
        self.qkv = linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor] | None, n_prefix: int) -> Tensor:
        b, n, dim = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, h, N, d)
        if rope is not None:
            sin, cos = rope
            q = apply_rope(q, sin, cos, n_prefix)
            k = apply_rope(k, sin, cos, n_prefix)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, h, N, d)
        return self.proj(out.transpose(1, 2).reshape(b, n, dim))


class Mlp(nn.Module):
    """``fc2(GELU(fc1(x)))`` with exact GELU."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwiGLUFFN(nn.Module):
    """``w3(silu(w1(x)) * w2(x))``; ``hidden`` is the already-aligned width."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden)
        self.w2 = nn.Linear(dim, hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.w3(F.silu(self.w1(x)) * self.w2(x))


class LayerScale(nn.Module):
    """Per-channel scale ``x * gamma`` with ``gamma`` of shape ``(D,)``."""

    def __init__(self, dim: int, init: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm transformer block: ``x + ls1(attn(norm1(x)))``, then ``x + ls2(mlp(norm2(x)))``."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        ffn: nn.Module,
        qkv_bias: bool,
        mask_k_bias: bool,
        layerscale_init: float,
        norm_eps: float,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = SelfAttention(dim, num_heads, qkv_bias, mask_k_bias)
        self.ls1 = LayerScale(dim, layerscale_init)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = ffn
        self.ls2 = LayerScale(dim, layerscale_init)

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor] | None, n_prefix: int) -> Tensor:
        x = x + self.ls1(self.attn(self.norm1(x), rope, n_prefix))
        return x + self.ls2(self.mlp(self.norm2(x)))
