"""Where weights are found (explicit path, GEODINO_WEIGHTS, cache, HF layouts) and downloads from a local server."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch

from geodino.errors import WeightsError
from geodino.models import build_model, cache_dir, download, find_weights, get_spec
from geodino.models.checkpoint import hash_in_name, sha256_file
from geodino.models.store import candidates_in

TINY = "geodino_tiny_mlp"
SAT = "dinov3_vitl16_sat493m"
SIGNED_QUERY = "Policy=eyJTdGF0ZW1lbnQiOlt7IlJlc291cmNlIjoiKiJ9XX0_&Signature=AbC~d3%3D&Key-Pair-Id=K1"


@pytest.fixture(autouse=True)
def _no_weights_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GEODINO_WEIGHTS", raising=False)
    monkeypatch.delenv("GEODINO_CACHE", raising=False)


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []


def _features(model: torch.nn.Module) -> torch.Tensor:
    x = torch.randn(1, 3, 32, 48, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        return model.forward_features(x)["x_norm_patchtokens"]


# --- download --------------------------------------------------------------------------------------


def test_download_lands_in_cache_and_loads(http_server, make_checkpoint, tmp_path: Path) -> None:
    served = make_checkpoint(TINY, seed=1)
    prefix = hash_in_name(served)
    assert prefix is not None and sha256_file(served).startswith(prefix)
    http_server.files[served.name] = served.read_bytes()
    cache = tmp_path / "cache"  # does not exist yet: download creates it

    path = download(http_server.url(served.name), spec=get_spec(TINY), cache=cache, progress=False)

    assert path == cache / served.name
    assert path.read_bytes() == served.read_bytes()
    assert _files(cache) == [served.name]  # no *.part-* left behind
    assert find_weights(get_spec(TINY), cache=cache) == path

    loaded = build_model(TINY, find_weights(get_spec(TINY), cache=cache))
    assert loaded.weights_info.source == str(path)
    assert loaded.weights_info.hash_verified == prefix
    assert loaded.weights_info.layout == "meta" and not loaded.weights_info.is_random
    direct = build_model(TINY, served)
    assert torch.equal(_features(loaded), _features(direct))
    # the comparison can tell weights apart: other random weights give other features
    assert not torch.allclose(_features(loaded), _features(build_model(TINY, "random", seed=5)))


def test_download_found_through_geodino_cache(http_server, make_checkpoint, tmp_path: Path, monkeypatch) -> None:
    served = make_checkpoint(TINY, seed=2)
    http_server.files[served.name] = served.read_bytes()
    monkeypatch.setenv("GEODINO_CACHE", str(tmp_path / "env-cache"))
    path = download(http_server.url(served.name), progress=False)
    assert path == tmp_path / "env-cache" / served.name
    assert find_weights(get_spec(TINY)) == path


def test_download_signed_url_saves_name_without_query(http_server, make_checkpoint, tmp_path: Path) -> None:
    served = make_checkpoint(TINY, seed=1)
    http_server.files[served.name] = served.read_bytes()
    cache = tmp_path / "cache"

    path = download(http_server.url(served.name, SIGNED_QUERY), spec=get_spec(TINY), cache=cache, progress=False)

    assert path.name == served.name
    assert _files(cache) == [served.name]
    assert path.read_bytes() == served.read_bytes()
    assert "Signature=" in http_server.requests[-1]  # the signed URL was requested as given


def test_download_existing_file_is_not_fetched_again(http_server, make_checkpoint, tmp_path: Path) -> None:
    served = make_checkpoint(TINY, seed=1)
    http_server.files[served.name] = served.read_bytes()
    cache = tmp_path / "cache"
    first = download(http_server.url(served.name), cache=cache, progress=False)
    second = download(http_server.url(served.name), cache=cache, progress=False)
    assert first == second
    assert len(http_server.requests) == 1


def test_download_wrong_hash_leaves_nothing(http_server, make_checkpoint, tmp_path: Path) -> None:
    served = make_checkpoint(TINY, seed=1)
    wrong = "00000000" if not sha256_file(served).startswith("00000000") else "ffffffff"
    name = f"{get_spec(TINY).file_stem}-{wrong}.pth"
    http_server.files[name] = served.read_bytes()
    cache = tmp_path / "cache"

    with pytest.raises(WeightsError, match=f"expected {wrong}") as err:
        download(http_server.url(name, SIGNED_QUERY), spec=get_spec(TINY), cache=cache, progress=False)

    assert name in str(err.value)
    assert "Signature" not in str(err.value)
    assert _files(cache) == []  # nothing half-written, no partial file, no unverified file
    # the same file goes through when the caller opts out of the check
    path = download(http_server.url(name), cache=cache, check_hash=False, progress=False)
    assert path.read_bytes() == served.read_bytes()


def test_download_spec_hash_checked_when_name_has_none(http_server, make_checkpoint, tmp_path: Path) -> None:
    served = make_checkpoint(TINY, seed=1)
    http_server.files["plain.pth"] = served.read_bytes()  # no hash in the name: the spec's hash applies
    cache = tmp_path / "cache"
    with pytest.raises(WeightsError, match=f"expected {get_spec(SAT).hash_prefix}"):
        download(http_server.url("plain.pth"), spec=get_spec(SAT), cache=cache, progress=False)
    assert _files(cache) == []


def test_download_404_leaves_nothing(http_server, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    name = f"{get_spec(TINY).file_stem}-0123abcd.pth"
    with pytest.raises(WeightsError, match="Not Found") as err:
        download(http_server.url(name, SIGNED_QUERY), spec=get_spec(TINY), cache=cache, progress=False)
    assert name in str(err.value)
    assert "Signature" not in str(err.value)  # the signed part of the URL is a secret
    assert _files(cache) == []


def test_download_truncated_body_leaves_nothing(http_server, make_checkpoint, tmp_path: Path) -> None:
    served = make_checkpoint(TINY, seed=1)
    http_server.truncated[served.name] = served.read_bytes()  # Content-Length: full size, half sent
    cache = tmp_path / "cache"
    with pytest.raises(WeightsError) as err:
        download(http_server.url(served.name), spec=get_spec(TINY), cache=cache, progress=False)
    assert served.name in str(err.value)
    assert _files(cache) == []


def test_download_server_hangs_up_before_answering(http_server, tmp_path: Path) -> None:
    http_server.hang_up.add("x-0123abcd.pth")  # the connection closes before any status line
    cache = tmp_path / "cache"
    with pytest.raises(WeightsError, match="download failed"):
        download(http_server.url("x-0123abcd.pth"), cache=cache, progress=False)
    assert _files(cache) == []


def test_download_connection_refused(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port that was free a moment ago and has no listener now
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(WeightsError, match="download failed"):
        download(f"http://127.0.0.1:{port}/x-0123abcd.pth", cache=tmp_path / "cache", progress=False, timeout=5)
    assert _files(tmp_path / "cache") == []


def test_download_url_without_file_name(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="file name"):
        download("http://127.0.0.1:9/", cache=tmp_path / "cache", progress=False)


# --- find_weights and cache_dir ----------------------------------------------------------------------


def test_find_weights_order(make_checkpoint, tmp_path: Path, monkeypatch) -> None:
    spec = get_spec(TINY)
    explicit = make_checkpoint(TINY, seed=1, folder=tmp_path / "explicit")
    env_file = make_checkpoint(TINY, seed=2, folder=tmp_path / "env")
    cached = make_checkpoint(TINY, seed=3, folder=tmp_path / "cache")
    cache = tmp_path / "cache"
    assert len({explicit.name, env_file.name, cached.name}) == 3

    assert find_weights(spec, cache=cache) == cached
    monkeypatch.setenv("GEODINO_WEIGHTS", str(env_file))
    assert find_weights(spec, cache=cache) == env_file  # GEODINO_WEIGHTS (a file) beats the cache
    assert find_weights(spec, explicit, cache=cache) == explicit  # an explicit path beats both
    assert find_weights(spec, str(explicit), cache=cache) == explicit
    monkeypatch.setenv("GEODINO_WEIGHTS", str(tmp_path / "env"))
    assert find_weights(spec, cache=cache) == env_file  # GEODINO_WEIGHTS can be a folder
    monkeypatch.setenv("GEODINO_WEIGHTS", str(tmp_path / "explicit"))
    assert find_weights(spec, cache=cache) == explicit


def test_find_weights_env_folder_without_match_falls_back_to_cache(make_checkpoint, tmp_path: Path, monkeypatch) -> None:
    cached = make_checkpoint(TINY, seed=3, folder=tmp_path / "cache")
    other = make_checkpoint("geodino_tiny_swiglu", seed=1, folder=tmp_path / "env")  # another spec's file
    monkeypatch.setenv("GEODINO_WEIGHTS", str(other.parent))
    assert find_weights(get_spec(TINY), cache=tmp_path / "cache") == cached
    assert find_weights(get_spec("geodino_tiny_swiglu"), cache=tmp_path / "cache") == other


def test_find_weights_explicit_missing_path(make_checkpoint, tmp_path: Path) -> None:
    make_checkpoint(TINY, seed=3, folder=tmp_path / "cache")  # present, but an explicit path wins or fails
    missing = tmp_path / "nowhere" / "model.pth"
    with pytest.raises(WeightsError, match="not found") as err:
        find_weights(get_spec(TINY), missing, cache=tmp_path / "cache")
    assert str(missing) in str(err.value)


def test_find_weights_nothing_found_says_where_it_looked(tmp_path: Path, monkeypatch) -> None:
    cache = tmp_path / "empty-cache"
    cache.mkdir()
    with pytest.raises(WeightsError) as err:
        find_weights(get_spec(SAT), cache=cache)
    msg = str(err.value)
    assert SAT in msg
    assert get_spec(SAT).file_name in msg
    assert str(cache) in msg
    assert "--weights random" in msg
    assert f"geodino download {SAT}" in msg
    assert "\n" not in msg

    gone = tmp_path / "gone"
    monkeypatch.setenv("GEODINO_WEIGHTS", str(gone))
    with pytest.raises(WeightsError) as err:
        find_weights(get_spec(SAT), cache=tmp_path / "no-cache-folder")
    msg = str(err.value)
    assert f"GEODINO_WEIGHTS={gone} (does not exist)" in msg
    assert str(tmp_path / "no-cache-folder") in msg


def test_cache_dir_precedence(tmp_path: Path, monkeypatch) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    assert cache_dir() == home / ".cache" / "geodino"
    monkeypatch.setenv("GEODINO_CACHE", str(tmp_path / "env-cache"))
    assert cache_dir() == tmp_path / "env-cache"
    assert cache_dir(tmp_path / "arg") == tmp_path / "arg"
    assert cache_dir(str(tmp_path / "arg")) == tmp_path / "arg"
    monkeypatch.setenv("GEODINO_CACHE", "~/elsewhere")
    assert cache_dir() == home / "elsewhere"
    assert cache_dir("~/x") == home / "x"
    monkeypatch.setenv("GEODINO_CACHE", "")  # empty means unset
    assert cache_dir() == home / ".cache" / "geodino"


# --- Hugging Face layouts (paths only: the official model is never built here) ------------------------


def test_candidates_in_hf_layouts(tmp_path: Path) -> None:
    spec = get_spec(SAT)
    assert spec.hf_repo == "facebook/dinov3-vitl16-pretrain-sat493m"
    folder = tmp_path / "weights"
    folder.mkdir()
    assert candidates_in(folder, spec) == []

    snapshot = folder / "models--facebook--dinov3-vitl16-pretrain-sat493m" / "snapshots" / "0123456789abcdef"
    snapshot.mkdir(parents=True)
    assert candidates_in(folder, spec) == [snapshot]
    assert find_weights(spec, cache=folder) == snapshot

    repo = folder / "dinov3-vitl16-pretrain-sat493m"
    repo.mkdir()
    assert candidates_in(folder, spec) == [repo, snapshot]
    assert find_weights(spec, folder) == repo

    official = folder / spec.file_name
    official.touch()
    assert candidates_in(folder, spec) == [official, repo, snapshot]
    assert find_weights(spec, cache=folder) == official

    # an HF folder passed directly (it has a config.json) is taken as is
    (repo / "config.json").write_text("{}")
    assert find_weights(spec, repo) == repo
    # other specs' folders are not candidates
    assert candidates_in(folder, get_spec("dinov3_vitl16_lvd1689m")) == []
