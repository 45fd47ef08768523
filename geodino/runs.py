"""What a command does, as one library call: checks, the Job, the model, the outputs, the record.

The CLI parses arguments, calls one of these and prints; a notebook calls the same function and gets the
same checks, memory estimate, cleanup and files. :func:`encode_run` is ``geodino encode``; the prediction
commands are in :mod:`geodino.predict_runs`. What geodino decided and warnings go to :class:`Hooks`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from geodino.blocks import ModelRef
from geodino.cluster import ZarrResult, check_request, encode_to_zarr
from geodino.contract import gsd_note, map_inputs
from geodino.device import check_precision, resolve_device
from geodino.engine import EncodeOptions, EncodeResult, Progress, check_options, encode_scene, encode_targets
from geodino.errors import InputError, WeightsError
from geodino.estimate import check_memory, job_memory, n_params
from geodino.features import FeatureExtractor, check_layers, feature_card, parse_layers
from geodino.job import BandChoice, Job, Outputs, prepare_job
from geodino.models import build_model, get_spec
from geodino.models.multiband import BandMixer
from geodino.models.vit import DinoVisionTransformer
from geodino.scene import Scene, open_scene
from geodino.tilemodel import TileModel, load_factory, refuse_backbone_options

if TYPE_CHECKING:
    from geodino.landcover import EpochProgress


def _warn(message: str) -> None:
    warnings.warn(f"geodino: {message}", UserWarning, stacklevel=3)


def _notes(notes: Sequence[str]) -> None:
    for n in notes:
        _warn(n)


@dataclass
class Hooks:
    """Where a run reports: ``notes`` (what geodino decided, before the work starts), ``warn`` (e.g. random
    weights), ``progress(done, total)`` over tiles and ``epochs(epoch, epochs, loss)`` while a head trains.
    Defaults: ``UserWarning`` and no progress. Long steps without a count are logged (:mod:`geodino.steps`)."""

    notes: Callable[[Sequence[str]], None] = _notes
    warn: Callable[[str], None] = _warn
    progress: Progress | None = field(default=None)
    epochs: EpochProgress | None = field(default=None)


def split_output(paths: Sequence[str], out: str | Path | None, usage: str) -> tuple[list[str], Path]:
    """``SCENE... OUT``: the inputs and the output (``out`` when given, else the last path), as rasterio's
    ``resolve_inout``; one line naming ``usage`` when there is no input."""
    if out is not None:
        return list(paths), Path(out)
    if len(paths) < 2:
        raise InputError(f"give the scene and the output: {usage}")
    return list(paths[:-1]), Path(paths[-1])


def load_backbone(model: str, weights: str | None, check_hash: bool = True) -> DinoVisionTransformer:
    """A registered backbone with its weights; a missing file's message says how to try random weights."""
    try:
        return build_model(model, weights, check_hash=check_hash)
    except WeightsError as exc:
        if weights is None:
            raise WeightsError(f"{exc} (or pass --weights random to try the pipeline with random weights)") from None
        raise


def random_note(model: TileModel, hooks: Hooks, what: str = "features") -> None:
    if model.describe().get("random_weights"):
        hooks.warn(f"using RANDOM weights: the {what} carry no meaning")


def encode_run(
    paths: Sequence[str | Path] | str | Path,
    out: str | Path,
    *,
    model: str | TileModel = "dinov3_vitl16_sat493m",
    weights: str | None = None,
    layers: str | Sequence[int] | None = "-1",
    device: str = "auto",
    precision: str = "fp32",
    mixer: str | Path | None = None,
    options: EncodeOptions = EncodeOptions(),
    workers: int | None = None,
    scheduler: str | None = None,
    chunk: int | None = None,
    check_hash: bool = True,
    hooks: Hooks | None = None,
) -> EncodeResult | ZarrResult:
    """``geodino encode``: ``model`` (a registered name, ``package.module:factory`` or a TileModel object) over the
    scene at ``paths`` into ``out``. Zarr without PCA/tokens is written block by block (resumable; ``workers`` or
    ``scheduler`` for dask); anything else is streamed. Every check runs before a registered model is built (a
    factory is called first, to learn the model's bands and stride; a block-wise run pickles the object it returns
    to the workers)."""
    hooks = hooks or Hooks()
    paths = [str(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    scene = open_scene(paths)
    inputs = [*paths, *scene.paths, weights, mixer]  # a STAC item is an input too
    check_options(options)
    outputs = Outputs.of(encode_targets(out, options), inputs, options.overwrite)  # checked here, before any work
    options = options.for_output(out)  # what the (safe) output's name says
    blockwise = options.fmt == "zarr" and not options.pca and not options.tokens
    if (workers is not None or scheduler is not None or chunk is not None) and not blockwise:
        raise InputError("--workers/--scheduler/--chunk write a Zarr store block by block: name the output .zarr, without --pca/--tokens")
    if blockwise:
        check_request(options, chunk, scheduler, workers)
    resolve_device(device), check_precision(precision)
    named = isinstance(model, str) and ":" not in model
    net: TileModel | None = None if named else (load_factory(model) if isinstance(model, str) else model)
    if not named:
        refuse_backbone_options(weights, layers, mixer, device, precision, options.tokens)
    band_mixer = BandMixer.load(mixer) if mixer is not None else None
    choice, notes = options.choice, tuple[str, ...]()
    if band_mixer is not None:  # its stored band identities select the scene's bands; --bands may override them
        mapped = map_inputs(
            band_mixer.contract(), scene, choice.sensor, choice.bands, f"band mixer {mixer}", band_mixer.n_bands, strict=False
        )
        choice, notes = replace(choice, sensor=mapped.sensor, bands=mapped.bands), mapped.notes
        options = replace(options, sensor=mapped.sensor, bands=mapped.bands)
    if named:
        spec = get_spec(str(model))
        check_layers(spec.arch.depth, layers)
        bands = tuple(band_mixer.band_names) if band_mixer is not None else spec.bands
        card = feature_card(spec.arch.depth, spec.arch.embed_dim, bands, layers)
        job = prepare_job(scene, card, tiling=options.tiling, choice=choice, outputs=outputs)
        params = n_params(spec)
    else:
        assert net is not None
        job = prepare_job(scene, net, tiling=options.tiling, choice=choice, outputs=outputs)
        params = 0
    if options.pca is not None and options.pca > job.dim:
        raise InputError(f"--pca {options.pca}: the features have {job.dim} channels")
    if band_mixer is not None:
        notes += tuple(filter(None, [gsd_note(job.adapter.gsd, band_mixer.gsd, f"band mixer {mixer}")]))
    hooks.notes([*notes, *job.adapter.notes])
    check_memory(job_memory(job, params), f"--tile {options.tile}")
    if blockwise:
        return _encode_blocks(job, out, str(model) if named else None, net, weights, layers, device, precision, mixer, options,
                              chunk, scheduler, workers, check_hash, hooks)  # fmt: skip
    with outputs.open() as outs:  # locked before the model is built
        if net is None:
            net = FeatureExtractor(load_backbone(str(model), weights, check_hash), layers, device, precision, band_mixer)
        random_note(net, hooks)
        result = encode_scene(job, out, net, options, hooks.progress, outputs=outs)
        outs.commit()
    return result


def _encode_blocks(
    job: Job, out: str | Path, name: str | None, net: TileModel | None, weights: str | None,
    layers: str | Sequence[int] | None, device: str, precision: str, mixer: str | Path | None, options: EncodeOptions,
    chunk: int | None, scheduler: str | None, workers: int | None, check_hash: bool, hooks: Hooks,
) -> ZarrResult:  # fmt: skip
    """The block-wise executor: a registered model is built once per worker (``ModelRef``); a model of one's own
    (``net``, from a factory or an object) is pickled to the workers."""
    model: ModelRef | TileModel
    if name is not None:
        if weights not in (None, "random") and Path(weights).exists():
            weights = str(Path(weights).resolve())  # workers may start in other folders
        mix = str(Path(mixer).resolve()) if mixer else None
        ref = ModelRef(name, weights, tuple(parse_layers(layers)), device, precision, mix, check_hash=check_hash)
        try:
            built = ref.extractor()  # built once here; the threaded scheduler reuses it
        except WeightsError as exc:
            if weights is None:
                raise WeightsError(f"{exc} (or pass --weights random to try the pipeline with random weights)") from None
            raise
        random_note(built, hooks)
        del built  # encode_to_zarr reuses the cached one, or frees it when workers build their own
        model = ref
    else:
        assert net is not None
        random_note(net, hooks)
        model = net
    return encode_to_zarr(job, out, model, options, chunk, scheduler, workers, hooks.progress)


def scene_of(paths: Sequence[str | Path] | str | Path | Scene) -> Scene:
    """The scene at ``paths`` (a raster, band files or a STAC item), or the :class:`Scene` value given."""
    if isinstance(paths, Scene):
        return paths
    return open_scene([str(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)])


def given_paths(scene: Sequence[str | Path] | str | Path | Scene) -> list[str | Path]:
    """The paths a caller named for a scene (a STAC item's too; none for a :class:`Scene` value, whose files are its own)."""
    if isinstance(scene, Scene):
        return []
    return [scene] if isinstance(scene, (str, Path)) else list(scene)


__all__ = ["BandChoice", "Hooks", "encode_run", "given_paths", "load_backbone", "random_note", "scene_of", "split_output"]
