"""Input contracts of trained heads and band mixers: which bands (by identity), which stretch, which GSD.

A land-cover head (:mod:`geodino.landcover`) or a band mixer (:mod:`geodino.models.multiband`) learns on
bands of given identities (common name, else band name), stretched one way (a preset's fixed physical
stretch, or a scene-wide percentile stretch), at one ground sampling distance. Applied to another scene,
its bands are mapped by identity, never by position, and the stretch policy is reused
(:func:`map_inputs`). Files written before contracts existed carry none: they are used as before
(detection, ``--sensor``, ``--bands``), with a note saying so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

from geodino.bands import Band, canonical_band, describe
from geodino.detect import detect, identify
from geodino.errors import GeodinoError, InputError
from geodino.scene import Scene
from geodino.sensors import get_preset

if TYPE_CHECKING:
    from geodino.adapter import BandAdapter

#: Key of the contract in a head's record.
CONTRACT_KEY = "input_contract"
#: A scene whose GSD differs from the expected one by more than this factor (either way) gets a note.
GSD_FACTOR = 4.0
POLICIES = ("fixed", "percentile")


def identity(band: Mapping[str, object]) -> dict[str, str | None]:
    """``{"name", "common"}`` of a band record (``BandAdapter.bands`` entries, mixer band names)."""
    common = band.get("common")
    return {"name": str(band.get("name")), "common": str(common) if common else None}


def stretch_policy(adapter: BandAdapter) -> str:
    """``fixed`` (a preset's physical lo/hi) or ``percentile`` (scene-wide percentiles), as :func:`prepare` did it."""
    return "fixed" if adapter.fixed_stretch else "percentile"


def head_contract(adapter: BandAdapter) -> dict[str, object]:
    """The contract a head trained through ``adapter`` records (the adapter record itself is stored beside it)."""
    return {
        "preset": adapter.preset,
        "stretch": stretch_policy(adapter),
        "bands": [identity(b) for b in adapter.selected()],
        "scene_bands": len(adapter.bands) or None,  # how many bands the training scene had (for unnamed bands)
        "gsd": adapter.gsd,
    }


def contract_problem(contract: object, n_inputs: int | None = None) -> str | None:
    """What is wrong with a stored contract's structure, or None."""
    if not isinstance(contract, dict):
        return f"{CONTRACT_KEY} must be a dict, not {type(contract).__name__}"
    bands, gsd, stretch = contract.get("bands"), contract.get("gsd"), contract.get("stretch")
    if not isinstance(bands, list) or not bands or (n_inputs is not None and len(bands) != n_inputs):
        return f"{CONTRACT_KEY} bands must be a list of {n_inputs or 'the'} input band identities"
    if not all(isinstance(b, dict) and isinstance(b.get("name"), str) and isinstance(b.get("common"), (str, type(None))) for b in bands):
        return f"{CONTRACT_KEY} bands must be {{name, common}} records"
    if gsd is not None and (isinstance(gsd, bool) or not isinstance(gsd, (int, float)) or not math.isfinite(gsd) or gsd <= 0):
        return f"{CONTRACT_KEY} gsd must be a positive number of metres or null, not {gsd!r}"
    if stretch is not None and stretch not in POLICIES:
        return f"{CONTRACT_KEY} stretch must be one of {', '.join(POLICIES)}, not {stretch!r}"
    if contract.get("preset") is not None and not isinstance(contract.get("preset"), str):
        return f"{CONTRACT_KEY} preset must be a preset name"
    return None


def gsd_note(gsd: float | None, expected: float | None, what: str) -> str | None:
    """A note when the scene's ``gsd`` (metres, after ``--gsd``) is more than :data:`GSD_FACTOR` times
    finer or coarser than the ``expected`` GSD of ``what``; None when either is unknown or they are close."""
    if not gsd or not expected:
        return None
    ratio = gsd / expected
    if 1 / GSD_FACTOR <= ratio <= GSD_FACTOR:
        return None
    way = f"{ratio:.1f}x coarser" if ratio > 1 else f"{1 / ratio:.1f}x finer"
    caveat = " (that matches the size of objects in pixels but adds no detail)" if ratio > 1 else ""
    return (
        f"the scene's pixels are {gsd:.3g} m, {way} than the {expected:g} m {what} expects: objects appear at another "
        f"size than in training and the results may be poor; pass --gsd {expected:g} to resample the scene{caveat}"
    )


@dataclass(frozen=True)
class InputMap:
    """What to pass to :func:`geodino.adapter.prepare`: the preset and the scene bands (1-based), and notes."""

    sensor: str | None
    bands: str | None
    notes: tuple[str, ...] = ()


def _known(b: Mapping[str, str | None]) -> bool:
    """Whether a stored input band has an identity (a common name, or a name that is not a bare index)."""
    return bool(b["common"]) or not str(b["name"]).isdigit()


def _label(b: Mapping[str, str | None]) -> str:
    """``red (B4)``, ``nir``, ``pan``, ``B8`` (no common name), ``band 1 (unnamed)`` (a bare index)."""
    common, name = b["common"], str(b["name"])
    if not common:
        return f"band {name} (unnamed)" if name.isdigit() else name
    return common if name.isdigit() or name == common else f"{common} ({name})"


def _find(named: tuple[Band, ...], want: Mapping[str, str | None], scene: Scene, scene_bands: object) -> int | None:
    """0-based index of the scene band with ``want``'s identity: its common name, else (none stored) its band name;
    an unnamed band only on a scene of the same band count where that band is unnamed too."""
    common, name = want["common"], str(want["name"])
    if common:
        return next((i for i, b in enumerate(named) if b.common == common), None)
    if not name.isdigit():
        return next((i for i, b in enumerate(named) if canonical_band(b.name) == canonical_band(name)), None)
    i = int(name) - 1
    same_layout = scene_bands == scene.count and 0 <= i < len(named)
    raw = scene.bands[i] if scene.bands and same_layout else None  # what the file itself says (not detection's pan rule)
    return i if raw is not None and raw.common is None and raw.name_from == "index" else None


def _identities(scene: Scene, sensor: str | None) -> tuple[Band, ...]:
    """Every scene band's identity as detection sees it: from evidence, completed by ``sensor``'s layout where given."""
    auto = identify(scene)
    if not sensor:
        return auto
    alt = identify(scene, sensor)
    return tuple(a if a.common or not b.common else b for a, b in zip(alt, auto, strict=True))


def _where(scene: Scene, named: tuple[Band, ...], i: int) -> str:
    path = Path(scene.band_sources[i][0]).name if len(scene.paths) > 1 else None
    name = "" if named[i].name == str(i + 1) else f" {named[i].name}"
    return f"band {i + 1}{name}" + (f" ({path})" if path else "")


def _unfit(preset: object, what: str, exc: Exception) -> InputError:
    return InputError(
        f"{what} was trained with the fixed (physical) stretch of preset {preset}, which does not fit this scene ({exc}); "
        "pass --sensor to choose a stretch for it (the head then sees other values than in training)"
    )


def _stretch_sensor(contract: Mapping[str, object], scene: Scene, chosen: str, what: str, n: int) -> tuple[str | None, str]:
    """The preset reproducing the contract's stretch policy on ``scene`` (bands ``chosen``), and how it was chosen."""
    preset, policy = contract.get("preset"), contract.get("stretch")
    if policy == "fixed":
        try:
            detect(scene, n, str(preset), chosen)
        except GeodinoError as exc:
            raise _unfit(preset, what, exc) from None
        return str(preset), f"preset {preset} (fixed stretch, as in training)"
    if policy == "percentile":
        candidates = [str(preset)] if preset else []
        candidates += ["pan"] * (scene.count == 1) + ["generic"]
        for name in candidates:
            try:
                if get_preset(name).percentiles is not None:
                    detect(scene, n, name, chosen)
                    return name, f"preset {name}, this scene's own percentiles (trained with a percentile stretch, {preset})"
            except GeodinoError:
                continue
    return None, ""


def map_inputs(
    contract: Mapping[str, object] | None, scene: Scene, sensor: str | None, bands: str | None, what: str, n_inputs: int,
    strict: bool = True,
) -> InputMap:  # fmt: skip
    """The scene bands carrying the contract's input identities, in order, and the preset giving its stretch policy.

    ``sensor`` (``--sensor``) wins over the stored policy. ``bands`` (``--bands``): with ``strict`` (heads) it must
    select the bands the identities select, or is refused; otherwise (mixers) it overrides them when it selects
    ``n_inputs`` bands. A band the scene lacks, or inputs of unknown identity that cannot be matched, raise one-line
    :class:`InputError` before anything is built. ``contract`` None (an older file): everything as given, with a note.
    """
    if contract is None:
        note = (f"{what} records no input contract (written by an older geodino): its bands are chosen as for encode "
                "(detection, --sensor, --bands), not by identity, and its stretch and GSD are not checked")  # fmt: skip
        return InputMap(sensor, bands, (note,))
    want = [identity(b) for b in cast("list[Mapping[str, object]]", contract["bands"])]  # shape checked by contract_problem
    if not strict and not any(_known(b) for b in want):  # e.g. a mixer built with the default names 1..N
        note = f"{what}'s input bands have no known identity ({', '.join(b['name'] or '' for b in want)}): chosen as for encode"
        return InputMap(sensor, bands, (note + " (--bands, detection)",))
    fixed = contract.get("stretch") == "fixed" and not sensor
    try:
        named = _identities(scene, sensor or (str(contract["preset"]) if fixed else None))
    except GeodinoError as exc:
        if not fixed:
            raise
        raise _unfit(contract["preset"], what, exc) from None
    found = [_find(named, b, scene, contract.get("scene_bands")) for b in want]
    inputs = ", ".join(_label(b) for b in want)
    user = detect(scene, n_inputs, sensor, bands).indexes if bands else None
    name = ", ".join(Path(p).name for p in scene.paths[:3]) + (" ..." if len(scene.paths) > 3 else "")
    missing = [_label(b) for b, i in zip(want, found, strict=True) if i is None and _known(b)]
    if missing and not (user is not None and not strict):
        raise InputError(
            f"{name} lacks the band(s) {', '.join(dict.fromkeys(missing))} that {what} takes (its inputs: {inputs}): "
            f"the scene's bands are {describe(named)}" + ("" if strict else f" (--bands with {n_inputs} bands overrides them)")
        )
    unknown = [i for i, b in enumerate(want) if not _known(b)]
    if any(found[i] is None for i in unknown) and user is None:
        raise InputError(
            f"{what} was trained on {inputs} of a {contract.get('scene_bands')}-band scene, chosen by index with no known "
            f"identity, and {name} has {scene.count} band(s) ({describe(named)}): the identities do not match, so none is "
            "guessed; pass --bands to say which bands of this scene feed its inputs"
        )
    how_mapped = "mapped by identity" if not unknown else f"mapped by position (unnamed bands, {scene.count}-band scene as in training)"
    if user is not None:
        mapped = tuple(i for i in found if i is not None)
        agree = all(f is None or f == u for f, u in zip(found, user, strict=True))
        if strict and not agree:
            picked = ", ".join(f"{named[i].label()}" for i in user)
            raise InputError(
                f"--bands {bands} selects {picked} but {what} was trained on {inputs} (bands "
                f"{','.join(str(i + 1) for i in mapped)} of this scene): leave --bands out, the head's bands are found by identity"
            )
        if not agree:
            how_mapped = f"from --bands {bands}, overriding the bands it was trained on ({inputs})"
        elif unknown:
            how_mapped = f"from --bands {bands}, taken as given (its inputs have no known identity)"
        else:
            how_mapped += f" (--bands {bands} agrees)"
        indexes = user
    else:
        indexes = tuple(i for i in found if i is not None)
    chosen = ",".join(str(i + 1) for i in indexes)
    final, how = (sensor, f"--sensor {sensor}") if sensor else _stretch_sensor(contract, scene, chosen, what, n_inputs)
    pairs = ", ".join(f"{_label(b)} <- {_where(scene, named, i)}" for b, i in zip(want, indexes, strict=True))
    return InputMap(final, chosen, (f"{what}: inputs {how_mapped}: {pairs}" + (f"; stretch: {how}" if how else ""),))


def mixer_contract(bands: Sequence[Mapping[str, str | None]] | None, gsd: float | None) -> dict[str, object] | None:
    """A band mixer's contract: identities and GSD, no stretch policy (the scene's preset applies)."""
    return None if bands is None else {"preset": None, "stretch": None, "bands": list(bands), "scene_bands": None, "gsd": gsd}
