"""Shared fixtures. Real imagery lives in ../shared/data beside the checkout (never copied here)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import torch

from tests.helpers import serving

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real-imagery folder; missing it fails under CI (``CI`` set) and skips elsewhere."""
    if not SHARED_DATA.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but the shared data folder {SHARED_DATA} is missing")
        pytest.skip(f"shared data folder {SHARED_DATA} not present")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _isolated_weights_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test may see the user's GEODINO_WEIGHTS, weights cache or Hugging Face hub cache (fresh processes inherit this)."""
    monkeypatch.delenv("GEODINO_WEIGHTS", raising=False)
    monkeypatch.setenv("GEODINO_CACHE", str(tmp_path / "geodino-cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-hub-cache"))


# --- local HTTP server and tiny checkpoints (used by test_store.py and test_cli.py) ---------------


class LocalServer:
    """What the server fixture serves: ``files`` in full, ``truncated`` with a Content-Length that
    promises more bytes than are sent before the connection closes, ``hang_up`` names with no answer
    at all (the connection just closes); anything else is a 404."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.truncated: dict[str, bytes] = {}
        self.hang_up: set[str] = set()
        self.requests: list[str] = []  # request targets as received (path and query)
        self.base = ""

    def url(self, name: str, query: str = "") -> str:
        return f"{self.base}/weights/{name}" + (f"?{query}" if query else "")


@pytest.fixture
def http_server() -> Iterator[LocalServer]:
    """A ThreadingHTTPServer on 127.0.0.1 (free port) serving ``/weights/<name>``; shut down after the test."""
    state = LocalServer()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests.append(self.path)
            name = urlsplit(self.path).path.rsplit("/", 1)[-1]
            if name in state.files:
                body = state.files[name]
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            elif name in state.truncated:
                body = state.truncated[name]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
            elif name in state.hang_up:
                self.close_connection = True
            else:
                self.send_error(404, "Not Found")

        def log_message(self, format: str, *args: object) -> None:  # keep the test output clean
            pass

    with serving(Handler) as base:
        state.base = base
        yield state


def hashed_name(path: Path, stem: str) -> str:
    """``<stem>-<first 8 hex of the file's sha256>.pth``, the name under which ``path`` verifies."""
    return f"{stem}-{hashlib.sha256(path.read_bytes()).hexdigest()[:8]}.pth"


@pytest.fixture
def make_checkpoint(tmp_path: Path) -> Callable[..., Path]:
    """Factory: a random Meta-layout checkpoint of a tiny spec, named ``<file_stem>-<true hash>.pth``
    (or ``name`` when given), in ``folder`` (default: a fresh folder under tmp_path)."""
    from geodino.models import get_spec, random_state_dict

    def make(spec_name: str = "geodino_tiny_mlp", seed: int = 1, folder: Path | None = None, name: str | None = None) -> Path:
        spec = get_spec(spec_name)
        folder = folder or tmp_path / f"ckpt-{spec_name}-{seed}"
        folder.mkdir(parents=True, exist_ok=True)
        raw = folder / "raw.pth"
        torch.save(random_state_dict(spec, seed=seed), raw)
        final = folder / (name or hashed_name(raw, spec.file_stem))
        raw.rename(final)
        return final

    return make


# --- a real-size random SAT ViT-L checkpoint (parity and loading tests) ----------------------------


@pytest.fixture(scope="session")
def sat_vitl_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    """Random weights in the official SAT ViT-L layout (``local_cls_norm`` included), drawn away from
    their init values, saved under the official file name; ``(state_dict, path)``."""
    from geodino.models import get_spec, random_state_dict

    spec = get_spec("dinov3_vitl16_sat493m")
    sd = random_state_dict(spec, seed=11, informative=True)
    path = tmp_path_factory.mktemp("sat") / spec.file_name
    torch.save(sd, path)
    return sd, path
