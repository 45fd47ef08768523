"""The DPT decoder of CHMv2 and its bins -> metres step, with Meta's module and parameter names.

Shapes: B batch, D backbone embed dim, h x w the patch grid (H/16 x W/16), C_i the post-process
channels of level i, F the fusion width, K the number of height bins. The decoder maps four
``(patches (B, D, h, w), cls (B, D))`` pairs to logits ``(B, K, 16*h', 16*w')`` with
``h' = 2*ceil(h/2)``: the input resolution when the patch grid is even, one patch more per odd side.

Parameter names are those of ``dinov3/eval/depth/models/dpt_head.py`` for the CHMv2 configuration
(``readout_type="project"``, no batch norm, residual-unit biases on, no projection after fusion), so
Meta's ``dinov3_vitl16_chmv2_dpt_head-*.pth`` loads strictly into :class:`DPTDecoder`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Up/down-sampling of the four reassembled levels (transposed conv x4, x2, identity, stride-2 conv).
RESIZE_FACTORS = (4, 2, 1, 0.5)
#: chmv2_mixlog bins span ``[min_depth, max_depth / 8]``; the weighted bin sum is multiplied back by 8.
MIXLOG_SCALE = 8.0
_SHIFT_MAX, _SHIFT_EPS, _EPS = 1e-4, 1e-8, 1e-12


@dataclass(frozen=True)
class DPTConfig:
    """Sizes of a DPT decoder. The defaults are those of the released CHMv2 head on ViT-L."""

    embed_dim: int = 1024
    post_process_channels: tuple[int, int, int, int] = (128, 256, 512, 1024)
    channels: int = 256  # fusion width F
    n_hidden_channels: int = 128
    n_bins: int = 256

    def __post_init__(self) -> None:
        if len(self.post_process_channels) != len(RESIZE_FACTORS):
            raise ValueError(f"post_process_channels needs {len(RESIZE_FACTORS)} entries, got {self.post_process_channels}")
        if self.channels % 2:
            raise ValueError(f"the fusion width must be even, got {self.channels}")


class ConvUnit(nn.Module):
    """A convolution kept under ``.conv`` (the reference's ConvModule), optionally preceded by a ReLU."""

    def __init__(self, c_in: int, c_out: int, kernel: int, bias: bool = True, pre_relu: bool = False) -> None:
        super().__init__()
        self.pre_relu = pre_relu
        self.conv = nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.relu(x) if self.pre_relu else x)


class ResidualUnit(nn.Module):
    """Pre-activation residual unit: ``x + conv2(relu(conv1(relu(x))))``, ``(B, F, h, w)`` throughout."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = ConvUnit(channels, channels, 3, pre_relu=True)
        self.conv2 = ConvUnit(channels, channels, 3, pre_relu=True)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(self.conv1(x))


class ReassembleBlocks(nn.Module):
    """Tokens of four blocks -> four feature maps ``(B, C_i, 4h, 2h, h, ceil(h/2))`` (same for w).

    Each level: the "project" readout ``GELU(Linear([patch | cls]))`` (2D -> D), a 1x1 projection to
    ``C_i`` channels, then the level's resize layer.
    """

    def __init__(self, embed_dim: int, out_channels: Sequence[int]) -> None:
        super().__init__()
        self.readout_projects = nn.ModuleList(nn.Sequential(nn.Linear(2 * embed_dim, embed_dim), nn.GELU()) for _ in out_channels)
        self.projects = nn.ModuleList(ConvUnit(embed_dim, c, 1) for c in out_channels)
        self.resize_layers = nn.ModuleList(_resize_layer(c, f) for c, f in zip(out_channels, RESIZE_FACTORS, strict=True))

    def forward(self, features: Sequence[tuple[Tensor, Tensor]]) -> list[Tensor]:
        out = []
        for readout, project, resize, (patches, cls) in zip(
            self.readout_projects, self.projects, self.resize_layers, features, strict=True
        ):
            b, d, h, w = patches.shape
            tokens = patches.flatten(2).transpose(1, 2)  # (B, h*w, D)
            tokens = readout(torch.cat([tokens, cls[:, None, :].expand_as(tokens)], dim=-1))
            x = tokens.transpose(1, 2).reshape(b, d, h, w)
            out.append(resize(project(x)))
        return out


def _resize_layer(channels: int, factor: float) -> nn.Module:
    if factor > 1:
        k = int(factor)
        return nn.ConvTranspose2d(channels, channels, kernel_size=k, stride=k)
    if factor == 1:
        return nn.Identity()
    return nn.Conv2d(channels, channels, kernel_size=3, stride=round(1 / factor), padding=1)


class FusionBlock(nn.Module):
    """``(B, F, h, w)`` [+ skip ``(B, F, ~h, ~w)``] -> ``(B, F, 2h, 2w)``.

    The skip (absent in the first block) is resized to the running map when their sizes differ
    (bilinear, corners not aligned), refined and added; the sum is refined again, upsampled x2
    (bilinear, corners aligned) and mixed by a 1x1 projection.
    """

    def __init__(self, channels: int, with_skip: bool = True) -> None:
        super().__init__()
        self.project = ConvUnit(channels, channels, 1)
        self.res_conv_unit1 = ResidualUnit(channels) if with_skip else None
        self.res_conv_unit2 = ResidualUnit(channels)

    def forward(self, x: Tensor, skip: Tensor | None = None) -> Tensor:
        if skip is not None and self.res_conv_unit1 is not None:
            if skip.shape != x.shape:
                skip = F.interpolate(skip, size=x.shape[-2:], mode="bilinear", align_corners=False)
            x = x + self.res_conv_unit1(skip)
        x = self.res_conv_unit2(x)
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        return self.project(x)


class UpConvHead(nn.Module):
    """``(B, F, h, w) -> (B, K, 2h, 2w)``: conv 3x3 to F/2, x2 bilinear, conv 3x3, ReLU, conv 1x1 to K bins."""

    def __init__(self, channels: int, n_bins: int, n_hidden_channels: int) -> None:
        super().__init__()
        self.head = nn.Sequential(
            nn.Conv2d(channels, channels // 2, 3, padding=1),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
            nn.Conv2d(channels // 2, n_hidden_channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(n_hidden_channels, n_bins, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.head(x)


class DPTDecoder(nn.Module):
    """CHMv2's DPT decoder: four ``(patches (B, D, h, w), cls (B, D))`` -> bin logits ``(B, K, 16h', 16w')``."""

    def __init__(self, config: DPTConfig) -> None:
        super().__init__()
        self.config = config
        c = config.channels
        self.reassemble_blocks = ReassembleBlocks(config.embed_dim, config.post_process_channels)
        self.convs = nn.ModuleList(ConvUnit(ch, c, 3, bias=False) for ch in config.post_process_channels)
        self.fusion_blocks = nn.ModuleList(FusionBlock(c, with_skip=i > 0) for i in range(len(config.post_process_channels)))
        self.conv_depth = UpConvHead(c, config.n_bins, config.n_hidden_channels)

    def forward(self, features: Sequence[tuple[Tensor, Tensor]]) -> Tensor:
        if len(features) != len(self.convs):
            raise ValueError(f"the DPT decoder takes {len(self.convs)} (patches, cls) pairs, got {len(features)}")
        levels = [conv(x) for conv, x in zip(self.convs, self.reassemble_blocks(features), strict=True)]
        levels.reverse()  # coarsest first
        out = self.fusion_blocks[0](levels[0])
        for block, skip in zip(self.fusion_blocks[1:], levels[1:], strict=True):
            out = block(out, skip)
        return self.conv_depth(out)

    @torch.no_grad()
    def init_weights(self, seed: int = 0) -> DPTDecoder:
        """Random weights: N(0, 2/fan_in) for every convolution and linear layer, zero biases."""
        g = torch.Generator().manual_seed(seed)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                fan_in = m.weight.shape[0] if isinstance(m, nn.ConvTranspose2d) else m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * math.sqrt(2.0 / fan_in))
                if m.bias is not None:
                    m.bias.zero_()
        return self

    @classmethod
    def random(cls, config: DPTConfig, seed: int = 0) -> DPTDecoder:
        """A decoder with :meth:`init_weights` random weights, allocated once."""
        with torch.device("meta"):
            model = cls(config)
        return model.to_empty(device="cpu").init_weights(seed)


def random_decoder_state_dict(config: DPTConfig, seed: int = 0, informative: bool = False) -> dict[str, Tensor]:
    """Random decoder weights in Meta's layout. ``informative=True`` also draws every bias away from
    zero (N(0, 0.1)), so that a comparison between implementations exercises every parameter."""
    sd = {k: v.detach() for k, v in DPTDecoder.random(config, seed).state_dict().items()}
    if informative:
        g = torch.Generator().manual_seed(seed + 1)
        for key, t in sd.items():
            if key.endswith(".bias"):
                t.copy_(0.1 * torch.randn(t.shape, generator=g))
    return sd


def mixlog_bins(n_bins: int, min_depth: float, max_depth: float, device: torch.device | str | None = None) -> Tensor:
    """The ``chmv2_mixlog`` bin centres ``(K,)`` in fp32, in units of 1/8 m: a blend that runs from
    log spacing (first bin, ``min_depth``) to linear spacing (last bin, ``max_depth / 8``)."""
    top = max_depth / MIXLOG_SCALE
    linear = torch.linspace(min_depth, top, n_bins, device=device)
    lo = torch.log(torch.tensor(min_depth, device=device))
    hi = torch.log(torch.tensor(top, device=device))
    log = torch.exp(torch.linspace(lo, hi, n_bins, device=device))
    t = torch.linspace(1.0, 0.0, n_bins, device=device)
    return t * log + (1.0 - t) * linear


def bins_to_metres(logits: Tensor, bins: Tensor) -> Tensor:
    """``(B, K, H, W)`` logits, ``(K,)`` bins -> ``(B, 1, H, W)`` metres, computed in fp32.

    The weights are ``relu(logits)`` plus a tiny positive shift, normalised to sum to 1 over the bins,
    so a height is a convex combination of the bins, times 8: it lies in
    ``[8 * min_depth, max_depth]`` (0.008 m to 96 m for CHMv2).
    """
    y = F.relu(logits.float())
    shift = (-y.amin(dim=1, keepdim=True)).clamp(0.0, _SHIFT_MAX) + _SHIFT_EPS
    y = y + shift
    total = torch.nan_to_num(y.sum(dim=1, keepdim=True), nan=1.0, posinf=1.0, neginf=1.0).clamp_min(_EPS)
    centres = bins.float().clamp_min(_EPS).view(1, -1, 1, 1)
    return ((y / total) * centres).sum(dim=1, keepdim=True).clamp_min(_EPS) * MIXLOG_SCALE
