"""Where weights are found (explicit path, GEODINO_WEIGHTS, cache, HF layouts) and downloads from a local server."""

from __future__ import annotations

import fcntl
import functools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from geodino import lock as lock_module
from geodino.errors import GeodinoError, InputError, WeightsError
from geodino.models import build_model, cache_dir, download, find_weights, get_spec
from geodino.models.checkpoint import hash_in_name, sha256_file
from geodino.models.store import candidates_in, default_deadline
from tests import helpers
from tests.helpers import serving

run_cli = functools.partial(helpers.run, columns=80)

TINY = "geodino_tiny_mlp"
SAT = "dinov3_vitl16_sat493m"
SIGNED_QUERY = "Policy=eyJTdGF0ZW1lbnQiOlt7IlJlc291cmNlIjoiKiJ9XX0_&Signature=AbC~d3%3D&Key-Pair-Id=K1"


@pytest.fixture(autouse=True)
def _no_weights_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GEODINO_WEIGHTS", raising=False)
    monkeypatch.delenv("GEODINO_CACHE", raising=False)


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []


def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert msg and "\n" not in msg, msg
    return msg


def _wait_for(condition, seconds: float = 20.0) -> None:
    end = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < end, "timed out waiting"
        time.sleep(0.02)


@pytest.fixture
def trickle_server() -> Iterator[SimpleNamespace]:
    """A server on 127.0.0.1 answering ``/weights/<any name>`` with ``body`` (its full Content-Length) but
    only one byte every ``interval`` seconds; ``requests`` counts the requests."""
    state = SimpleNamespace(body=b"x" * 200, interval=0.1, base="", requests=0, stop=threading.Event())
    state.url = lambda name, query="": f"{state.base}/weights/{name}" + (f"?{query}" if query else "")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests += 1
            self.send_response(200)
            self.send_header("Content-Length", str(len(state.body)))
            self.end_headers()
            try:
                for i in range(len(state.body)):
                    if state.stop.wait(state.interval):
                        return
                    self.wfile.write(state.body[i : i + 1])
            except OSError:  # the client gave up
                pass

        def log_message(self, format: str, *args: object) -> None:
            pass

    with serving(Handler) as base:
        state.base = base
        try:
            yield state
        finally:
            state.stop.set()


def assert_cli_one_line_error(result, *fragments: str) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("geodino: error: "), result.stderr
    assert "Traceback" not in result.output and result.stdout == ""
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


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


# --- download: URLs, deadline, checks of cached files, lock and leftovers, cache paths -----------


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("notaurl", "'notaurl': not a URL"),
        ("file:///x-0123abcd.pth", "file:// URL (file:///x-0123abcd.pth)"),
        ("FILE:///etc/x.pth?Signature=secret", "file:// URL (FILE:///etc/x.pth)"),
        ("ftp://127.0.0.1:9/x-0123abcd.pth", "ftp:// URL"),
    ],
)
def test_download_refuses_non_http_urls(url: str, fragment: str, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(WeightsError) as err:
        download(url, cache=cache, progress=False, timeout=2)
    msg = _one_line(err)
    assert fragment in msg and "secret" not in msg
    assert "download failed" not in msg  # refused before any network work
    assert not cache.exists()  # ... and before any file work


def test_download_file_url_is_not_copied_into_the_cache(make_checkpoint, tmp_path: Path) -> None:
    local = make_checkpoint(TINY, seed=1)
    cache = tmp_path / "cache"
    with pytest.raises(WeightsError, match=r"file:// URL .* only http:// and https://"):
        download(local.as_uri(), spec=get_spec(TINY), cache=cache, progress=False)
    assert not cache.exists()


@pytest.mark.parametrize("interval", [0.1, 3.0])  # bytes keep coming (each read succeeds); a byte every 3 s
def test_download_deadline_stops_a_trickling_server(trickle_server, interval: float, tmp_path: Path) -> None:
    trickle_server.interval = interval  # 200 bytes: 20 s or 10 min in all
    cache = tmp_path / "cache"
    started = time.monotonic()
    with pytest.raises(WeightsError) as err:
        download(trickle_server.url("slow-0123abcd.pth", SIGNED_QUERY), cache=cache, progress=False, timeout=60, deadline=1.0)
    elapsed = time.monotonic() - started
    msg = _one_line(err)
    assert "slow-0123abcd.pth passed its 1 s deadline" in msg and "of 200 bytes received" in msg
    assert "Signature" not in msg
    assert 0.9 < elapsed < 5  # neither the 60 s read timeout nor the whole trickle
    assert _files(cache) == []  # no partial file, no lock file


def test_download_default_deadline() -> None:
    assert default_deadline(None) == 24 * 3600  # no Content-Length: one day
    assert default_deadline(10_000) == 600  # never under 10 minutes
    assert default_deadline(1_200_000_000) == 12_000  # 100 kB/s for a ViT-L checkpoint
    with pytest.raises(InputError, match="positive"):
        download("http://127.0.0.1:9/x.pth", deadline=0, progress=False)


def test_download_replaces_a_corrupt_cached_file(http_server, make_checkpoint, tmp_path: Path) -> None:
    served = make_checkpoint(TINY, seed=1)
    http_server.files[served.name] = served.read_bytes()
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / served.name).write_bytes(served.read_bytes()[:1000])  # a truncated copy under the hashed name

    path = download(http_server.url(served.name), spec=get_spec(TINY), cache=cache, progress=False)

    assert path.read_bytes() == served.read_bytes()
    assert len(http_server.requests) == 1  # not trusted: fetched again
    assert _files(cache) == [served.name]


def test_download_cached_file_failing_the_spec_hash_is_removed(http_server, make_checkpoint, tmp_path: Path) -> None:
    served = make_checkpoint(TINY, seed=1)
    http_server.files["plain.pth"] = served.read_bytes()  # the server has the same wrong file
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "plain.pth").write_bytes(served.read_bytes())
    with pytest.raises(WeightsError, match=f"expected {get_spec(SAT).hash_prefix}"):
        download(http_server.url("plain.pth"), spec=get_spec(SAT), cache=cache, progress=False)
    assert len(http_server.requests) == 1
    assert _files(cache) == []  # the cached copy that failed its check is gone, not returned


def test_download_verify_checks_cached_and_fresh_files(http_server, make_checkpoint, tmp_path: Path) -> None:
    served = make_checkpoint(TINY, seed=1)
    http_server.files["plain.pth"] = served.read_bytes()  # no hash in the name, none in the spec
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "plain.pth").write_bytes(b"not a checkpoint")
    checked: list[Path] = []

    def loads(path: Path) -> None:
        checked.append(path)
        build_model(TINY, path, check_hash=False)

    # without a check the caller gets the cached file as is (and must check it itself)
    assert download(http_server.url("plain.pth"), cache=cache, progress=False).read_bytes() == b"not a checkpoint"
    assert http_server.requests == []
    # with one, the cached file fails it, is removed, and a good one is fetched and checked too
    path = download(http_server.url("plain.pth"), cache=cache, progress=False, verify=loads)
    assert path.read_bytes() == served.read_bytes()
    assert checked == [path, path] and len(http_server.requests) == 1
    # a good cached file passes and is not fetched again
    assert download(http_server.url("plain.pth"), cache=cache, progress=False, verify=loads) == path
    assert len(http_server.requests) == 1

    # a fresh file that fails the check does not stay in the cache
    http_server.files["bad.pth"] = b"not a checkpoint either"
    with pytest.raises(WeightsError) as err:
        download(http_server.url("bad.pth"), cache=cache, progress=False, verify=loads)
    assert "bad.pth" in _one_line(err)
    assert _files(cache) == ["plain.pth"]


def test_download_clears_leftovers_and_stale_lock(http_server, make_checkpoint, tmp_path: Path) -> None:
    served = make_checkpoint(TINY, seed=1)
    http_server.files[served.name] = served.read_bytes()
    cache = tmp_path / "cache"
    cache.mkdir()
    for leftover in (f"{served.name}.part-999999", f"{served.name}.part-1"):
        (cache / leftover).write_bytes(b"half")
    (cache / f"{served.name}.lock").write_text("pid 999999 on elsewhere since long ago\n")  # nobody holds it
    (cache / "other.pth.part-5").write_bytes(b"another file's download")

    path = download(http_server.url(served.name), cache=cache, progress=False)

    assert path.read_bytes() == served.read_bytes()
    assert _files(cache) == sorted([served.name, "other.pth.part-5"])  # only this target's leftovers go


def test_download_after_sigkill_cleans_up(trickle_server, http_server, make_checkpoint, tmp_path: Path) -> None:
    served = make_checkpoint(TINY, seed=1)
    cache = tmp_path / "cache"
    code = "import sys; from geodino.models import download; download(sys.argv[1], cache=sys.argv[2], progress=False)"
    child = subprocess.Popen([sys.executable, "-c", code, trickle_server.url(served.name), str(cache)])
    try:
        _wait_for(lambda: any(".part-" in name for name in _files(cache)), 60)
        with pytest.raises(WeightsError) as err:  # the live child holds the lock
            download(http_server.url(served.name), cache=cache, progress=False)
        assert f"by pid {child.pid} on {socket.gethostname()} since " in _one_line(err)
    finally:
        child.kill()
        child.wait()
    assert f"{served.name}.part-{child.pid}" in _files(cache)  # what a killed run leaves

    http_server.files[served.name] = served.read_bytes()
    path = download(http_server.url(served.name), cache=cache, progress=False)
    assert path.read_bytes() == served.read_bytes()
    assert _files(cache) == [served.name]


def test_download_concurrent_download_of_same_file_refuses(trickle_server, tmp_path: Path) -> None:
    trickle_server.body, trickle_server.interval = b"y" * 30, 0.05  # 1.5 s
    cache = tmp_path / "cache"
    url = trickle_server.url("slow.pth")
    result: dict[str, object] = {}
    first = threading.Thread(target=lambda: result.update(path=download(url, cache=cache, progress=False)))
    first.start()
    try:
        _wait_for(lambda: (cache / "slow.pth.lock").exists() and (cache / "slow.pth.lock").read_text())
        with pytest.raises(WeightsError) as err:
            download(url, cache=cache, progress=False)
        msg = _one_line(err)
        assert f"slow.pth is already being downloaded into {cache} by pid {os.getpid()} on {socket.gethostname()}" in msg
    finally:
        first.join(timeout=30)
    assert result["path"] == cache / "slow.pth"
    assert (cache / "slow.pth").read_bytes() == b"y" * 30
    assert trickle_server.requests == 1  # the refused call asked nothing
    assert _files(cache) == ["slow.pth"]  # the lock file is gone


def test_download_lock_retries_when_its_file_was_replaced(http_server, make_checkpoint, tmp_path: Path, monkeypatch) -> None:
    served = make_checkpoint(TINY, seed=1)
    http_server.files[served.name] = served.read_bytes()
    cache = tmp_path / "cache"
    lock = cache / f"{served.name}.lock"
    held: list[tuple[int, int]] = []

    def flock(fd: int, op: int) -> None:
        if not held:  # the previous holder unlinks the file between our open and our flock; a third makes it anew
            lock.unlink()
            lock.write_text("")
        fcntl.flock(fd, op)
        held.append((os.fstat(fd).st_ino, os.stat(lock).st_ino))

    monkeypatch.setattr(lock_module, "fcntl", SimpleNamespace(flock=flock, LOCK_EX=fcntl.LOCK_EX, LOCK_NB=fcntl.LOCK_NB))
    path = download(http_server.url(served.name), cache=cache, progress=False)

    assert len(held) == 2  # the stale inode was let go, the lock taken again on the file at the path
    assert held[0][0] != held[0][1] and held[1][0] == held[1][1]
    assert path.read_bytes() == served.read_bytes()
    assert _files(cache) == [served.name]


def test_download_interrupted_by_a_signal_leaves_nothing(trickle_server, http_server, make_checkpoint, tmp_path: Path) -> None:
    class Terminated(BaseException):
        pass

    def on_sigterm(signum: int, frame: object) -> None:
        raise Terminated

    cache = tmp_path / "cache"
    previous = signal.signal(signal.SIGTERM, on_sigterm)
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM))
    try:
        timer.start()
        with pytest.raises(Terminated):
            download(trickle_server.url("x-0123abcd.pth"), cache=cache, progress=False)
    finally:
        timer.cancel()
        signal.signal(signal.SIGTERM, previous)
    assert _files(cache) == []  # no partial file, no lock

    served = make_checkpoint(TINY, seed=1)  # the lock was released: the next download goes through
    http_server.files[served.name] = served.read_bytes()
    assert download(http_server.url(served.name), cache=cache, progress=False).read_bytes() == served.read_bytes()


def test_download_cache_path_problems(http_server, tmp_path: Path) -> None:
    a_file = tmp_path / "somefile"
    a_file.write_text("not a folder")
    with pytest.raises(WeightsError) as err:
        download(http_server.url("x-0123abcd.pth"), cache=a_file, progress=False)
    assert _one_line(err) == f"weights cache {a_file} is a file, not a folder: choose another --cache-dir or GEODINO_CACHE"
    with pytest.raises(WeightsError) as err:
        download(http_server.url("x-0123abcd.pth"), cache=a_file / "sub", progress=False)
    assert _one_line(err) == f"cannot create the weights cache {a_file / 'sub'}: Not a directory"
    assert a_file.read_text() == "not a folder"
    assert http_server.requests == []


def test_download_unwritable_cache(http_server, tmp_path: Path, monkeypatch) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    real_open = os.open

    def refusing_open(path, flags, *args, **kwargs):  # what a read-only folder does to a non-root user
        if Path(path).parent == cache:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing_open)
    with pytest.raises(GeodinoError) as err:
        download(http_server.url("x-0123abcd.pth"), cache=cache, progress=False)
    assert _one_line(err) == f"cannot create the lock {cache}/x-0123abcd.pth.lock: Permission denied"
    assert http_server.requests == []


# --- download from the command line ------------------------------------------------------------------


def test_cli_download_removes_a_file_that_does_not_load(http_server, make_checkpoint, tmp_path: Path) -> None:
    other = make_checkpoint("geodino_tiny_swiglu", seed=1)  # a good file (its hash verifies), for another spec
    http_server.files[other.name] = other.read_bytes()
    cache = tmp_path / "cache"
    result = run_cli("download", TINY, "--url", http_server.url(other.name, "Signature=secret"), "--cache-dir", str(cache))
    line = assert_cli_one_line_error(result, other.name)
    assert "secret" not in line
    assert _files(cache) == []

    cache.mkdir(exist_ok=True)  # the same for a file already in the cache: removed, fetched again, removed
    (cache / other.name).write_bytes(other.read_bytes())
    assert_cli_one_line_error(run_cli("download", TINY, "--url", http_server.url(other.name), "--cache-dir", str(cache)), other.name)
    assert len(http_server.requests) == 2
    assert _files(cache) == []


def test_cli_download_one_line_errors(trickle_server, tmp_path: Path) -> None:
    a_file = tmp_path / "somefile"
    a_file.write_text("")
    assert_cli_one_line_error(run_cli("download", TINY, "--url", "file:///etc/passwd", "--cache-dir", str(tmp_path / "c")), "file://")
    assert_cli_one_line_error(run_cli("download", TINY, "--url", "notaurl"), "not a URL")
    assert_cli_one_line_error(run_cli("download", TINY, "--url", trickle_server.url("x.pth"), "--cache-dir", str(a_file)), "is a file")
    assert trickle_server.requests == 0
    cache = tmp_path / "cache"
    result = run_cli("download", TINY, "--url", trickle_server.url("x.pth"), "--cache-dir", str(cache), "--deadline", "0.5")
    assert_cli_one_line_error(result, "x.pth passed its 0.5 s deadline")
    assert _files(cache) == []
    assert_cli_one_line_error(
        run_cli("download", TINY, "--url", trickle_server.url("x.pth"), "--deadline", "-1"), "deadline must be a positive number of seconds"
    )


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
    assert candidates_in(folder, spec) == []  # a snapshot without weights (an interrupted download) is no candidate
    (snapshot / "model.safetensors").touch()
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


def test_download_names_from_the_url_never_leave_the_cache_or_touch_other_files(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (tmp_path / "important.tif").write_bytes(b"keep")
    (cache / "scene.tif").write_bytes(b"keep too")
    (cache / "w.pth.part-notes.txt").write_bytes(b"mine")
    for url in (
        "http://127.0.0.1:9/x/..%2Fimportant.tif",
        f"http://127.0.0.1:9/%2F{tmp_path}%2Fimportant.pth",
        "http://127.0.0.1:9/scene.tif",
    ):
        with pytest.raises(WeightsError, match="does not name a weights file"):
            download(url, cache=cache, progress=False)
    with pytest.raises(WeightsError, match="download failed"):
        download("http://127.0.0.1:9/w.pth", cache=cache, progress=False)
    assert (tmp_path / "important.tif").read_bytes() == b"keep" and (cache / "scene.tif").read_bytes() == b"keep too"
    assert (cache / "w.pth.part-notes.txt").read_bytes() == b"mine"
