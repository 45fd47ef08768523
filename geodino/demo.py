"""The demo job (``make demo``): encode a whole scene into a feature COG and a PCA quicklook PNG.

The scene is one from ``../shared/data`` beside the checkout when present (NAIP 5 m, 934 x 723),
else one the package generates. Real weights are used when found; otherwise random weights, and
the demo says so: random features carry no meaning, only the pipeline is shown working.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from geodino.engine import EncodeOptions, EncodeResult, Progress, encode_scene
from geodino.errors import InputError, WeightsError
from geodino.features import FeatureExtractor
from geodino.models import RANDOM, DinoVisionTransformer, build_model
from geodino.outputs import OutputSet
from geodino.pca import write_quicklook
from geodino.stacitem import with_items
from geodino.synthetic import write_scene

#: The shared real scene the demo prefers (relative to the folder that holds the checkout).
SHARED_SCENE = Path("shared") / "data" / "naip_rgbn_5m" / "m_4709963_se_14_1_20200831.tif"
GENERATED_SIDE = 896


def load_or_random(model: str, weights: str | None, check_hash: bool = True) -> tuple[DinoVisionTransformer, str | None]:
    """The model with real weights when found, else random weights and a note saying why."""
    if weights is not None:
        return build_model(model, weights, check_hash=check_hash), None
    try:
        return build_model(model, check_hash=check_hash), None
    except WeightsError as exc:
        return build_model(model, RANDOM), str(exc)


def demo_scene(out_dir: Path, scene: str | None = None) -> tuple[Path, str]:
    """The scene to encode and where it came from: ``scene``, the shared NAIP crop, or a generated one."""
    if scene is not None:
        return Path(scene), "given"
    shared = Path(__file__).resolve().parents[2] / SHARED_SCENE
    if shared.is_file():
        return shared, "real NAIP 5 m crop from ../shared/data"
    path = out_dir / "generated_scene.tif"
    if not path.exists():
        write_scene(path, GENERATED_SIDE, GENERATED_SIDE, pixel=1.0)
    return path, f"generated {GENERATED_SIDE}x{GENERATED_SIDE} RGB scene (no ../shared/data here)"


@dataclass(frozen=True)
class DemoReport:
    scene: Path
    scene_origin: str
    features: Path
    quicklook: Path
    result: EncodeResult
    random_weights: bool


def run_demo(
    model: DinoVisionTransformer,
    out_dir: str | Path = "demo_output",
    scene: str | None = None,
    tile: int = 512,
    overlap: int = 64,
    progress: Progress | None = None,
) -> DemoReport:
    """Encode the demo scene to ``out_dir/features.tif`` (replacing it) and write ``out_dir/features_pca.png``."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out-dir {out_dir} is a file: give a folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create --out-dir {out_dir}: {exc.strerror}") from None
    path, origin = demo_scene(out_dir, scene)
    extractor = FeatureExtractor(model, device="auto")
    options = EncodeOptions(tile=tile, overlap=overlap, overwrite=True)
    features = out_dir / "features.tif"
    targets = with_items({"features": features, "quicklook": out_dir / "features_pca.png"})
    with OutputSet(targets, [path], overwrite=True, replaceable=["quicklook"]) as outs:
        result = encode_scene(path, features, extractor, options, progress, outputs=outs)
        write_quicklook(outs.temp("features"), outs.temp("quicklook"))
        done = outs.commit()
    return DemoReport(path, origin, result.out, done["quicklook"], result, bool(extractor.describe()["random_weights"]))
