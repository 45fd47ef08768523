"""GPU benchmark of geodino encode: ViT-L/16 SAT (RANDOM weights) in bf16 on CUDA, against the matmul ceiling.

One run measures, on the machine it runs on:

* the bf16 matrix-product rate of a large ``torch.matmul`` (the ceiling MFU is taken against);
* model-only tiles/s: ``get_intermediate_layers`` on a batch already on the GPU, bf16 autocast (and the same
  through geodino's ``FeatureExtractor``, which also copies the features back to the CPU as float32);
* end-to-end tiles/s of the real CLI (``python -m geodino.cli encode SCENE OUT --weights random --device cuda
  --precision bf16 --batch-size B``) over a generated scene, read from the run's own summary (``--profile``);
* the stand-in pipeline (``--model bench.standin:vitl``: ViT-L output shapes, no model cost) on the CPU cores,
  same scene, COG float32: the I/O pipeline's own rate on this machine.

Prints one markdown table last and writes the raw numbers to ``$OUT/gpu.json`` (``GPU_BENCH_JSON`` overrides).
Without CUDA it refuses (exit 2) unless ``GEODINO_GPU_BENCH_DRYRUN=cpu``: then every step runs on the CPU with tiny
sizes (``geodino_tiny_mlp``, a 1024-px scene), to exercise the code path; its numbers mean nothing.

Sizes come from environment variables (defaults for CUDA / for the dry run):

    GPU_BENCH_MODEL      dinov3_vitl16_sat493m / geodino_tiny_mlp
    GPU_BENCH_SIZE       8192 / 1024    side of the generated scene, px
    GPU_BENCH_TILE       512 / 128      tile side, px
    GPU_BENCH_OVERLAP    64 / 32        CLI --overlap
    GPU_BENCH_BATCHES    32,64 / 2,4    batch sizes
    GPU_BENCH_ITERS      10 / 2         timed model-only iterations per batch size
    GPU_BENCH_WARMUP     3 / 1          warm-up iterations (model-only and matmul)
    GPU_BENCH_MATMUL_N   8192 / 256     side of the square bf16 matrices
    GPU_BENCH_MATMUL_ITERS 30 / 3
    GPU_BENCH_E2E        1              0: skip the CLI end-to-end runs
    GPU_BENCH_STANDIN    1              0: skip the stand-in pipeline run
    GPU_BENCH_RUN_TIMEOUT 240 / 300     seconds allowed to each CLI run
    GPU_BENCH_DEADLINE   330 / 900      seconds from the start after which no further CLI run starts
                                        (each is cut to what is left); gpu.json is saved after every step
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
DRYRUN = os.environ.get("GEODINO_GPU_BENCH_DRYRUN", "").strip().lower()


def setting(name: str, cuda_default: str, dry_default: str | None = None) -> str:
    return os.environ.get(name, dry_default if DRYRUN and dry_default is not None else cuda_default)


def model_flops_per_tile(arch: Any, tile: int) -> float:
    """FLOPs (2 x multiply-adds) of one ViT forward pass over one ``tile x tile`` tile (``arch``: a spec's ArchSpec).

    N tokens (P = (tile/16)^2 patches + 1 CLS + 4 register tokens), D dim, H MLP hidden. Per block, the matmuls
    hold ``4*D^2`` (q, k, v and the output projection) + ``m*D*H`` (MLP fc1 and fc2: m = 2; SwiGLU: m = 3)
    weights per token, 2 FLOPs each; attention adds ``Q K^T`` and ``A V``, 2 x ``2*N^2*D``::

        per_block = 2 * N * (4*D^2 + m*D*H) + 4 * N^2 * D
        total     = depth * per_block + 2 * P * D * (3 * 16 * 16)      # + the patch embedding (a 16x16x3 matmul)

    ViT-L/16 at 512 px: depth 24, D 1024, H 4096, N = 32*32 + 1 + 4 = 1029:
    per_block = 2*1029*(4*1024^2 + 2*1024*4096) + 4*1029^2*1024 = 25.90e9 + 4.34e9 = 30.24e9; x 24 = 725.7e9;
    + 1.6e9 for the patch embedding: 0.727 TFLOP per tile. Norms, softmax, GELU, RoPE: not counted.
    """
    n = arch.n_prefix_tokens + (tile // arch.patch_size) ** 2
    d, h = arch.embed_dim, arch.ffn_hidden
    m = 2 if arch.ffn == "mlp" else 3
    per_block = 2 * n * (4 * d * d + m * d * h) + 4 * n * n * d
    patch = 2 * (n - arch.n_prefix_tokens) * d * arch.in_chans * arch.patch_size**2
    return arch.depth * per_block + patch


class Clock:
    """Device-accurate timing: CUDA events on the GPU, perf_counter after a no-op sync on the CPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def time(self, fn: Any, iters: int) -> list[float]:
        """Seconds of each of ``iters`` calls of ``fn``."""
        out = []
        for _ in range(iters):
            if self.cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                out.append(start.elapsed_time(end) / 1e3)
            else:
                t0 = time.perf_counter()
                fn()
                out.append(time.perf_counter() - t0)
        return out


def matmul_rate(device: torch.device, n: int, warmup: int, iters: int) -> dict[str, Any]:
    """bf16 ``torch.matmul`` of two random ``n x n`` matrices: 2*n^3 FLOPs per product; median and best rate."""
    gen = torch.Generator(device=device).manual_seed(0)
    # three input pairs, rotated: no product reads what the previous one left in the L2 cache
    pairs = [
        (torch.randn(n, n, device=device, generator=gen).bfloat16(), torch.randn(n, n, device=device, generator=gen).bfloat16())
        for _ in range(3)
    ]
    out = torch.empty(n, n, device=device, dtype=torch.bfloat16)
    state = {"i": 0}

    def one() -> None:
        a, b = pairs[state["i"] % len(pairs)]
        state["i"] += 1
        torch.matmul(a, b, out=out)

    clock = Clock(device)
    clock.time(one, warmup)
    clock.sync()
    times = clock.time(one, iters)
    flops = 2.0 * n**3
    ref = pairs[0][0][:64].double() @ pairs[0][1].double()
    torch.matmul(*pairs[0], out=out)
    rel = ((out[:64].double() - ref).norm() / ref.norm()).item()
    return {
        "n": n,
        "iters": iters,
        "median_s": statistics.median(times),
        "tflops_median": flops / statistics.median(times) / 1e12,
        "tflops_best": flops / min(times) / 1e12,
        "rel_err_vs_fp64": rel,
    }


def model_only(model: Any, extractor: Any, device: torch.device, batch: int, tile: int, warmup: int, iters: int) -> dict[str, Any]:
    """Tiles/s of the backbone alone on a batch already on the device (bf16 autocast, inference mode, no copy),
    and of geodino's FeatureExtractor call (same forward, plus features to CPU float32) on the same batch."""
    from geodino.device import autocast

    gen = torch.Generator(device=device).manual_seed(1)
    xs = [torch.randn(batch, 3, tile, tile, device=device, generator=gen) for _ in range(2)]
    state = {"i": 0}
    layers = extractor.layers

    def forward() -> None:
        x = xs[state["i"] % 2]
        state["i"] += 1
        with torch.inference_mode(), autocast(device, "bf16"):
            model.get_intermediate_layers(x, n=layers, reshape=True, return_class_token=True, return_extra_tokens=True)

    def through_extractor() -> None:
        x = xs[state["i"] % 2]
        state["i"] += 1
        extractor(x)

    clock = Clock(device)
    res: dict[str, Any] = {"batch": batch}
    for name, fn in (("model", forward), ("extractor", through_extractor)):
        clock.time(fn, warmup)
        clock.sync()
        times = clock.time(fn, iters)
        med = statistics.median(times)
        res[name] = {"iters": iters, "median_s": med, "best_s": min(times), "tiles_per_s": batch / med, "times_s": times}
    if device.type == "cuda":
        res["max_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        torch.cuda.reset_peak_memory_stats(device)
    return res


SUMMARY = re.compile(r"wrote .*?: .*?(\d+) tiles(?: \((\d+) empty skipped\))? in ([\d.]+) s", re.S)
PROFILE = re.compile(r"^(read|model|blend|write|finish|total)\s+([\d.]+) s", re.M)


def cli_encode(scene: Path, out: Path, model: str, extra: list[str], timeout: float) -> dict[str, Any]:
    """One ``python -m geodino.cli encode`` in a fresh process; tiles and seconds from its own summary lines."""
    argv = [sys.executable, "-m", "geodino.cli", "encode", str(scene), str(out), "--model", model, *extra, "--overwrite", "--profile"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    env["COLUMNS"] = "400"  # rich wraps its lines at the terminal's width (80 without one)
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)
    wall = time.perf_counter() - t0
    text = proc.stdout + proc.stderr
    res: dict[str, Any] = {"argv": argv[1:], "rc": proc.returncode, "wall_s": wall}
    if proc.returncode != 0:
        res["error"] = text[-3000:]
        return res
    m = SUMMARY.search(proc.stdout)
    if m is None:
        res["error"] = "no summary line in the output:\n" + text[-3000:]
        return res
    stages = {k: float(v) for k, v in PROFILE.findall(proc.stdout)}
    tiles, skipped = int(m.group(1)), int(m.group(2) or 0)
    seconds = stages.get("total", float(m.group(3)))
    res |= {"tiles": tiles, "skipped": skipped, "encoded": tiles - skipped, "seconds": seconds, "stages": stages}
    res["tiles_per_s"] = (tiles - skipped) / seconds
    res["summary"] = " ".join(line for line in proc.stdout.splitlines() if line.startswith(("wrote", "total")))
    if out.exists():
        res["out_mib"] = (sum(p.stat().st_size for p in out.rglob("*")) if out.is_dir() else out.stat().st_size) / 2**20
    return res


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()


def environment(device: torch.device) -> dict[str, Any]:
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "dryrun": DRYRUN or None,
    }
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        env |= {"gpu": p.name, "gpu_memory_gib": p.total_memory / 2**30, "sm": f"{p.major}.{p.minor}", "cuda": torch.version.cuda}
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            env["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version,clocks.sm,clocks.max.sm,power.limit", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
            ).stdout.strip()
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("numpy", "rasterio", "odc-geo", "pyproj", "shapely", "kornia", "kornia_rs", "typer", "click", "rich"):
        try:
            env[dist] = version(dist)
        except PackageNotFoundError:
            env[dist] = "missing"
    return env


def fmt(x: Any, spec: str = ".1f") -> str:
    return format(x, spec) if isinstance(x, (int, float)) else "n/a"


def table(report: dict[str, Any]) -> str:
    peak = report.get("matmul", {}).get("tflops_median")
    flops = report["flops_per_tile"]
    mpx = report["scene"]["pixels"] / 1e6
    rows = [
        "| batch | model-only tiles/s | TFLOP/s | MFU | extractor tiles/s | e2e tiles/s | e2e / model-only"
        " | e2e Mpx/s | e2e MFU | e2e run s / wall s (tiles) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for b in report["batches"]:
        mo = report["model_only"].get(str(b), {})
        e2e = report["e2e"].get(str(b), {})
        m_rate = mo.get("model", {}).get("tiles_per_s")
        x_rate = mo.get("extractor", {}).get("tiles_per_s")
        e_rate = e2e.get("tiles_per_s")
        tf = m_rate * flops / 1e12 if m_rate else None
        mfu = tf / peak if tf and peak else None
        e_mfu = e_rate * flops / 1e12 / peak if e_rate and peak else None
        ratio = e_rate / m_rate if e_rate and m_rate else None
        e_mpx = mpx / e2e["seconds"] if e2e.get("seconds") else None
        if "seconds" in e2e:
            e_s = f"{e2e['seconds']:.2f} / {e2e['wall_s']:.1f} ({e2e['encoded']})"
        else:
            e_s = "error" if e2e.get("error") else e2e.get("skipped", "not run")
        rows.append(
            f"| {b} | {fmt(m_rate)} | {fmt(tf)} | {fmt(mfu, '.1%')} | {fmt(x_rate)} | {fmt(e_rate)} | {fmt(ratio, '.1%')} "
            f"| {fmt(e_mpx, '.2f')} | {fmt(e_mfu, '.1%')} | {e_s} |"
        )
    mm = report.get("matmul", {})
    head = (
        f"{report['model']} (RANDOM weights), bf16 autocast, tile {report['tile']} overlap {report['overlap']}, "
        f"scene {report['scene']['size']}x{report['scene']['size']} ({report['scene'].get('tiles', '?')} tiles), "
        f"{report['env'].get('gpu', report['env']['device'])}; {flops / 1e12:.4f} TFLOP/tile; "
        f"bf16 matmul {fmt(peak)} TFLOP/s median (best {fmt(mm.get('tflops_best'))}, n={mm.get('n')}); "
        "MFU = model FLOP/s / that measured matmul rate; e2e = `python -m geodino.cli encode` (run s: the run's own "
        "summary, model load and process start excluded; wall s: the whole process)"
    )
    st = report.get("standin", {})
    stand = f"stand-in pipeline (bench.standin:vitl, COG float32, {report['env']['cpus']} cores): "
    if "seconds" in st:
        stand += f"{st['tiles_per_s']:.1f} tiles/s, {mpx / st['seconds']:.2f} Mpx/s, run {st['seconds']:.2f} s, wall {st['wall_s']:.1f} s"
        best = max((e.get("tiles_per_s", 0.0) for e in report["e2e"].values()), default=0.0)
        if best:
            stand += f"; best GPU e2e = {best / st['tiles_per_s']:.1%} of the stand-in's rate"
    else:
        stand += "error" if st.get("error") else st.get("skipped", "not run")
    return "\n".join([head, "", *rows, "", stand])


def main() -> int:
    if DRYRUN not in ("", "cpu"):
        print(f"gpu_bench: GEODINO_GPU_BENCH_DRYRUN={DRYRUN!r}: only 'cpu' is known", file=sys.stderr)
        return 2
    if not DRYRUN and not torch.cuda.is_available():
        print("gpu_bench: no CUDA device (torch.cuda.is_available() is False); refusing (GEODINO_GPU_BENCH_DRYRUN=cpu runs a CPU dry run)")
        return 2
    t_all = time.perf_counter()
    device = torch.device("cpu" if DRYRUN else "cuda")
    model_name = setting("GPU_BENCH_MODEL", "dinov3_vitl16_sat493m", "geodino_tiny_mlp")
    size = int(setting("GPU_BENCH_SIZE", "8192", "1024"))
    tile = int(setting("GPU_BENCH_TILE", "512", "128"))
    overlap = int(setting("GPU_BENCH_OVERLAP", "64", "32"))
    batches = [int(b) for b in setting("GPU_BENCH_BATCHES", "32,64", "2,4").split(",") if b.strip()]
    iters = int(setting("GPU_BENCH_ITERS", "10", "2"))
    warmup = int(setting("GPU_BENCH_WARMUP", "3", "1"))
    mm_n = int(setting("GPU_BENCH_MATMUL_N", "8192", "256"))
    mm_iters = int(setting("GPU_BENCH_MATMUL_ITERS", "30", "3"))
    run_e2e = setting("GPU_BENCH_E2E", "1") != "0"
    run_standin = setting("GPU_BENCH_STANDIN", "1") != "0"
    timeout = float(setting("GPU_BENCH_RUN_TIMEOUT", "240", "300"))
    deadline = t_all + float(setting("GPU_BENCH_DEADLINE", "330", "900"))
    out_dir = Path(os.environ.get("OUT") or tempfile.gettempdir())
    json_path = Path(os.environ.get("GPU_BENCH_JSON") or out_dir / "gpu.json")
    tmp = Path(tempfile.mkdtemp(prefix="gpu_bench_"))
    scene = tmp / "scene.tif"
    sub_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    # the scene is generated on one CPU core in the background while the GPU runs the matmul and model-only steps
    gen = None
    if run_e2e or run_standin:
        code = "import sys; from geodino.synthetic import write_scene; write_scene(sys.argv[1], int(sys.argv[2]))"
        gen = subprocess.Popen([sys.executable, "-c", code, str(scene), str(size)], env=sub_env, cwd=ROOT)

    from geodino.features import FeatureExtractor
    from geodino.models import build_model, get_spec
    from geodino.tiling import TilePlan

    arch = get_spec(model_name).arch
    flops = model_flops_per_tile(arch, tile)
    plan = TilePlan(size, size, tile, overlap)
    report: dict[str, Any] = {
        "model": model_name,
        "weights": "random",
        "precision": "bf16 autocast",
        "tile": tile,
        "overlap": overlap,
        "batches": batches,
        "flops_per_tile": flops,
        "flops_formula": "depth*(2*N*(4*D^2 + m*D*H) + 4*N^2*D) + 2*P*D*3*16^2; N = P + prefix tokens, m = 2 (MLP) or 3 (SwiGLU)",
        "arch": {
            "depth": arch.depth,
            "dim": arch.embed_dim,
            "hidden": arch.ffn_hidden,
            "ffn": arch.ffn,
            "tokens": arch.n_prefix_tokens + (tile // arch.patch_size) ** 2,
        },
        "scene": {"size": size, "pixels": size * size, "tiles": len(plan), "grid": list(plan.grid_shape)},
        "env": environment(device),
        "model_only": {},
        "e2e": {},
        "errors": [],
    }
    print(f"gpu_bench: {model_name} with RANDOM weights (speed does not depend on values), bf16 autocast, {device}", flush=True)
    if DRYRUN:
        print("gpu_bench: DRY RUN on the CPU with tiny sizes: exercises the code path; the numbers mean nothing", flush=True)
    print(f"gpu_bench: environment {json.dumps(report['env'])}", flush=True)
    print(f"gpu_bench: {flops / 1e9:.1f} GFLOP per {tile}-px tile ({report['arch']})", flush=True)

    def save() -> None:
        report["total_s"] = time.perf_counter() - t_all
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=1, default=str))

    def attempt(what: str, fn: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn()
        except Exception as exc:
            report["errors"].append({"step": what, "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-3000:]})
            print(f"gpu_bench: {what} FAILED: {type(exc).__name__}: {exc}", flush=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
            return None
        finally:
            print(f"gpu_bench: {what} done in {time.perf_counter() - t0:.1f} s", flush=True)
            save()

    try:
        # 1. the ceiling
        mm = attempt("bf16 matmul", lambda: matmul_rate(device, mm_n, warmup, mm_iters))
        if mm:
            report["matmul"] = mm
            print(f"gpu_bench: bf16 matmul {mm_n}^3: {mm['tflops_median']:.1f} TFLOP/s median, {mm['tflops_best']:.1f} best, "
                  f"rel err vs fp64 {mm['rel_err_vs_fp64']:.1e}", flush=True)  # fmt: skip

        # 2. the model alone, batch on the device
        def build() -> tuple[Any, Any]:
            ext = FeatureExtractor(build_model(model_name, "random"), device=str(device), precision="bf16")
            return ext.model, ext

        built = attempt("build model", build)
        if built:
            model, extractor = built
            for b in batches:
                r = attempt(f"model-only batch {b}", lambda b=b: model_only(model, extractor, device, b, tile, warmup, iters))
                if r:
                    report["model_only"][str(b)] = r
                    m, x = r["model"], r["extractor"]
                    print(f"gpu_bench: model-only batch {b}: {m['tiles_per_s']:.1f} tiles/s ({flops * m['tiles_per_s'] / 1e12:.1f} "
                          f"TFLOP/s), via FeatureExtractor (features to CPU) {x['tiles_per_s']:.1f} tiles/s", flush=True)  # fmt: skip
            del model, extractor, built
            if device.type == "cuda":
                torch.cuda.empty_cache()  # the CLI runs in its own process: leave it the memory

        # 3. the CLI end to end, and the stand-in pipeline, on the generated scene
        if gen is not None:
            t0 = time.perf_counter()
            rc = gen.wait(timeout=max(1.0, deadline - time.perf_counter()))
            report["scene"] |= {"generate_rc": rc, "wait_s": time.perf_counter() - t0, "generated_after_s": time.perf_counter() - t_all}
            if rc != 0 or not scene.exists():
                report["errors"].append({"step": "generate scene", "error": f"write_scene exited {rc}"})
                run_e2e = run_standin = False
            else:
                report["scene"]["mib"] = scene.stat().st_size / 2**20
                print(f"gpu_bench: scene {size}x{size} ready ({report['scene']['mib']:.0f} MiB, {len(plan)} tiles), "
                      f"waited {report['scene']['wait_s']:.1f} s for it", flush=True)  # fmt: skip
        common = ["--tile", str(tile), "--overlap", str(overlap), "--format", "cog", "--dtype", "float32"]
        runs: list[tuple[str, str, list[str]]] = []
        if run_e2e:
            for b in batches:
                extra = ["--weights", "random", "--device", str(device), "--precision", "bf16", "--batch-size", str(b), *common]
                runs.append((str(b), model_name, extra))
        if run_standin:  # after the first GPU run: if time runs short, the other batch sizes go first
            runs.insert(min(1, len(runs)), ("standin", "bench.standin:vitl", common))
        for key, model_arg, extra in runs:
            what = "stand-in pipeline" if key == "standin" else f"CLI encode batch {key}"
            left = deadline - time.perf_counter()
            sink = report if key == "standin" else report["e2e"]
            if left < 30:
                sink[key] = {"skipped": f"skipped: {left:.0f} s left before GPU_BENCH_DEADLINE"}
                print(f"gpu_bench: {what} {sink[key]['skipped']}", flush=True)
                continue
            out = tmp / f"out_{key}.tif"
            r = attempt(
                what, lambda out=out, m=model_arg, extra=extra, left=left: cli_encode(scene, out, m, extra, min(timeout, left - 10))
            )
            remove(out)
            if r is None:  # raised (a timeout, say): attempt() recorded it
                sink[key] = {"error": report["errors"][-1]["error"]}
            else:
                sink[key] = r
                if "error" in r:
                    report["errors"].append({"step": what, "error": r["error"][-1500:]})
                print(f"gpu_bench: {what}: " + (f"{r['tiles_per_s']:.1f} tiles/s, {r['summary']}"
                      if "tiles_per_s" in r else f"rc {r['rc']}: {r.get('error', '')[-1500:]}"), flush=True)  # fmt: skip
    finally:
        if gen is not None and gen.poll() is None:
            gen.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    save()
    print(f"\ngpu_bench: raw numbers in {json_path}; {len(report['errors'])} error(s); total {report['total_s']:.0f} s\n")
    print(table(report))
    if DRYRUN:
        print("\n(DRY RUN on the CPU: the numbers above mean nothing)")
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
