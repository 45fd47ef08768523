#!/usr/bin/env bash
# GPU benchmark of geodino encode on a lent nvidia-h200 machine, in one call (see bench/gpu_bench.py for what it measures):
#
#   device run: command "bash bench/gpu.sh", carry [".whl"], timeout_s 480
#
# It installs the carried wheels into /tmp/site, prints an nvidia-smi summary, runs bench/gpu_bench.py and tees
# everything to $OUT/gpu.log; gpu_bench.py writes $OUT/gpu.json. Sizes: GPU_BENCH_* variables (gpu_bench.py's
# docstring), e.g. "GPU_BENCH_SIZE=6144 GPU_BENCH_BATCHES=32 bash bench/gpu.sh". The bench keeps to
# GPU_BENCH_DEADLINE (default 330 s) and this script stops it at GPU_BENCH_HARD_LIMIT (default 400 s).
#
# .whl/ (git-ignored through .git/info/exclude: "/.whl/") holds cp312 manylinux x86_64 wheels of what geodino's
# encode path imports and the machine's image lacks (KINDS.md's package list): rasterio, its cligj and
# click-plugins, affine, odc-geo, its cachetools, pyproj, shapely, kornia, kornia_rs, rioxarray, zstandard; about 58 MiB.
# Already there: torch, numpy, xarray, typer, rich, click, attrs, certifi, pyparsing, pyyaml, psutil, safetensors.
# Left out (not needed for `encode --format cog`, and over the 64 MiB the working tree may weigh): dask, distributed,
# zarr, numcodecs, geopandas, pystac. Rebuild it, from the repository's root, on a machine where pip reaches PyPI:
#
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
#     --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
#     rasterio==1.4.4 affine==3.0.1 cligj==0.7.2 click-plugins==1.1.1.2 odc-geo==0.5.3 cachetools==8.0.2 \
#     pyproj==3.7.2 shapely==2.2.0 kornia==0.9.0 kornia_rs==0.2.0 rioxarray==0.19.0 zstandard==0.25.0
#   du -sh .whl   # 58M; one version of each package (two stop the whole install)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 3
OUT=${OUT:-/tmp/gpu_bench_out}
mkdir -p "$OUT"

main() {
    echo "== gpu.sh $(date -u +%FT%TZ) on $(hostname), $(nproc) cores, repo $(pwd)"
    if ! ls .whl/*.whl >/dev/null 2>&1; then
        echo "gpu.sh: no wheels in .whl/: call the device run with carry [\".whl\"] (see the top of bench/gpu.sh)"
        return 3
    fi
    local t0=$SECONDS
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || return 3
    echo "== wheels installed into /tmp/site in $((SECONDS - t0)) s: $(ls .whl | tr '\n' ' ')"
    export PYTHONPATH="/tmp/site:$(pwd)"
    export PYTHONUNBUFFERED=1
    echo "== nvidia-smi"
    nvidia-smi -L
    nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw,power.limit,utilization.gpu --format=csv
    echo "== preflight: the imports of the CLI's encode path"
    python3 -c "import sys, torch, numpy, rasterio, odc.geo, pyproj, shapely, kornia, typer, rich, geodino.cli; \
print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'numpy', numpy.__version__, \
'rasterio', rasterio.__version__, 'gdal', rasterio.__gdal_version__, 'typer', getattr(typer, '__version__', '?'))" \
        || echo "gpu.sh: preflight import FAILED (the bench goes on: its CLI runs will say why)"
    echo "== bench/gpu_bench.py"
    timeout -k 10 "${GPU_BENCH_HARD_LIMIT:-400}" python3 bench/gpu_bench.py
    local rc=$?
    echo "== gpu.sh done: gpu_bench.py exit $rc, $SECONDS s in all; files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
    return $rc
}

main 2>&1 | tee "$OUT/gpu.log"
exit "${PIPESTATUS[0]}"
