"""Backbone speed: geodino's DINOv3 ViT against transformers' DINOv3ViTModel, same weights, same input.

Prints the time ratio geodino / transformers measured in one run (paired rounds, alternating which
model goes first, median of the per-round ratios). Random weights: speed does not depend on values.

    python bench/backbone_speed.py                       # CPU, ViT-L SAT, 1 x 512 x 512, fp32
    python bench/backbone_speed.py --device cuda --precision bf16 --batch 32   # adds tiles/s and MFU
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from geodino.models import build_model, get_spec, random_state_dict, save_checkpoint
from geodino.models.specs import ArchSpec


def forward_flops(arch: ArchSpec, height: int, width: int) -> float:
    """Multiply-adds x 2 of one forward pass at ``height x width`` (matmuls and attention)."""
    n = arch.n_prefix_tokens + (height // arch.patch_size) * (width // arch.patch_size)
    d, hidden = arch.embed_dim, arch.ffn_hidden
    ffn_mats = 3 if arch.ffn != "mlp" else 2
    per_block = 2 * n * d * (3 * d + d + ffn_mats * hidden) + 4 * n * n * d
    patch = 2 * (n - arch.n_prefix_tokens) * d * arch.in_chans * arch.patch_size**2
    return arch.depth * per_block + patch


def _timed(fn, sync) -> float:
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="dinov3_vitl16_sat493m")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="dense peak of the device at --precision (H100 SXM bf16: 989)")
    args = ap.parse_args()

    from transformers import DINOv3ViTModel

    spec = get_spec(args.model)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        sd = random_state_dict(spec, seed=0)
        torch.save(sd, Path(tmp) / "w.pth")
        ours = build_model(spec, Path(tmp) / "w.pth", device=device)
        save_checkpoint(ours, Path(tmp) / "hf", layout="hf")
        ref = DINOv3ViTModel.from_pretrained(Path(tmp) / "hf", attn_implementation="sdpa").eval().to(device)
        del sd
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.precision)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype else nullcontext()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    run_ours = lambda: ours.forward_features(x)["x_norm_patchtokens"]  # noqa: E731
    run_ref = lambda: ref(pixel_values=x).last_hidden_state  # noqa: E731

    with torch.inference_mode(), autocast:
        a, b = run_ours(), run_ref()  # warm-up, and a sanity check that both compute the same thing
        diff = (a.float() - b[:, spec.arch.n_prefix_tokens :].float()).abs().max().item()
        t_ours, t_ref = [], []
        for r in range(args.rounds):
            order = [(run_ours, t_ours), (run_ref, t_ref)]
            for fn, sink in order if r % 2 == 0 else order[::-1]:
                sink.append(_timed(fn, sync))
    ratios = [o / f for o, f in zip(t_ours, t_ref, strict=True)]
    med_o, med_r = statistics.median(t_ours), statistics.median(t_ref)
    print(
        f"model {spec.name}  input {args.batch}x3x{args.size}x{args.size}  {args.device} {args.precision}"
        f"  threads {torch.get_num_threads()}"
    )
    print(f"max |geodino - transformers| on patch tokens: {diff:.2e}")
    print(f"geodino       median {med_o:.3f} s  (rounds: {', '.join(f'{t:.3f}' for t in t_ours)})")
    print(f"transformers  median {med_r:.3f} s  (rounds: {', '.join(f'{t:.3f}' for t in t_ref)})")
    print(f"RATIO geodino / transformers: median {statistics.median(ratios):.3f}  (per round: {', '.join(f'{q:.3f}' for q in ratios)})")
    print(f"ratio of best times: {min(t_ours) / min(t_ref):.3f}")
    if device.type == "cuda":
        flops = forward_flops(spec.arch, args.size, args.size) * args.batch
        print(
            f"geodino: {args.batch / med_o:.1f} tiles/s, {flops / med_o / 1e12:.1f} TFLOP/s,"
            f" MFU {flops / med_o / (args.peak_tflops * 1e12):.1%}"
        )
        if dtype is not None:
            from torch.nn.attention import SDPBackend, sdpa_kernel

            with torch.inference_mode(), autocast, sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION]):
                run_ours()  # raises if no fused kernel accepts these inputs
            print("fused SDPA kernel (flash/cuDNN) accepted the bf16 attention inputs")


if __name__ == "__main__":
    main()
