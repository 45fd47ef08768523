"""Helpers shared by the tests: reference models from transformers, random images, a local HTTP server, and the
command line run in this process or a fresh one with the one-line-error assertion."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import torch

from geodino.models import hf_config, meta_to_hf
from geodino.models.keymap import StateDict
from geodino.models.specs import WeightsSpec


def hf_reference(spec: WeightsSpec, meta_sd: StateDict, folder: Path) -> torch.nn.Module:
    """transformers' ``DINOv3ViTModel`` holding ``meta_sd`` mapped by geodino, loaded the way users
    load Hugging Face checkpoints (``from_pretrained`` on a folder), with no missing or unexpected key."""
    from safetensors.torch import save_file
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    folder.mkdir(parents=True, exist_ok=True)
    DINOv3ViTConfig(**hf_config(spec.arch)).save_pretrained(folder)
    save_file({k: v.contiguous() for k, v in meta_to_hf(meta_sd).items()}, str(folder / "model.safetensors"))
    model, info = DINOv3ViTModel.from_pretrained(folder, output_loading_info=True)
    problems = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    assert not problems, problems
    return model.eval()


def hub_snapshot(cache: Path, repo_id: str, commit: str, files: dict[str, Path], main: bool = False) -> Path:
    """A snapshot in a Hugging Face hub cache laid out as ``hf download`` leaves it: each file's bytes in
    ``models--owner--name/blobs/<sha256>``, ``snapshots/<commit>/<name>`` a relative symlink to its blob, and
    ``refs/main`` naming ``commit`` when ``main``. Returns the snapshot folder."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir(exist_ok=True)
    for name, source in files.items():
        data = source.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / name).symlink_to(Path("..", "..", "blobs", blob.name))
    if main:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text(commit)  # huggingface_hub writes the hash without a newline
    return snapshot


def image(shape: tuple[int, int], batch: int = 2, seed: int = 0) -> torch.Tensor:
    """Normalised-looking random input ``(batch, 3, H, W)``."""
    return torch.randn(batch, 3, *shape, generator=torch.Generator().manual_seed(seed))


@contextlib.contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A ThreadingHTTPServer on 127.0.0.1 (a free port) answering with ``handler``; yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# --- running the command line -------------------------------------------------------------------------

#: Variables a developer's shell may hold that would change what a test run of the CLI does.
_DROPPED_ENV = ("GEODINO_WEIGHTS", "GEODINO_CACHE", "GEODINO_SENSORS")


def run(*args: object, columns: int = 200):
    """The CLI in this process (typer's CliRunner) as a pipe sees it: not a terminal, ``columns`` wide,
    no weights or cache folder from the developer's environment."""
    from typer.testing import CliRunner

    from geodino.cli import app

    env: dict[str, str | None] = {"COLUMNS": str(columns), **dict.fromkeys(_DROPPED_ENV)}
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def cli(
    *args: object, cwd: str | Path | None = None, env: dict[str, str] | None = None, timeout: float = 300, module: str = "geodino.cli"
) -> subprocess.CompletedProcess[str]:
    """``python -m geodino.cli ...`` (or ``-m module``) in a fresh process (what a user's shell runs), without the
    developer's geodino or GDAL settings."""
    base = {k: v for k, v in os.environ.items() if k not in _DROPPED_ENV and not k.startswith(("GDAL_", "CPL_"))}
    argv = [sys.executable, "-m", module, *map(str, args)]
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, env=base | {"COLUMNS": "200"} | (env or {}), timeout=timeout)


def one_line_error(result: object, *fragments: str, alone: bool = True, quiet_stdout: bool = False) -> str:
    """Assert a refusal: exit code 2, no traceback, exactly one ``geodino: error: ...`` line holding every fragment
    (``alone``: and nothing else on stderr; ``quiet_stdout``: and nothing on stdout). Takes a CliRunner result or a
    CompletedProcess; returns the error line."""
    code = getattr(result, "exit_code", getattr(result, "returncode", None))
    stderr, stdout = str(getattr(result, "stderr", "")), str(getattr(result, "stdout", ""))
    assert code == 2, (code, stdout, stderr)
    assert "Traceback" not in stderr + stdout, stderr
    errors = [ln for ln in stderr.splitlines() if ln.startswith("geodino: error: ")]
    assert len(errors) == 1 and stderr.strip().splitlines()[-1] == errors[0], stderr
    if alone:
        assert len(stderr.strip().splitlines()) == 1, stderr
    if quiet_stdout:
        assert stdout == "", stdout
    for f in fragments:
        assert f in errors[0], errors[0]
    return errors[0]
