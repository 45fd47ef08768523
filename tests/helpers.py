"""Helpers shared by the tests: reference models from transformers, random images, a local HTTP server."""

from __future__ import annotations

import contextlib
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
