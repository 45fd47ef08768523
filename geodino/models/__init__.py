"""DINOv3 backbones: specs registry, the ViT, checkpoint loading and saving."""

from geodino.models.checkpoint import random_state_dict, read_checkpoint
from geodino.models.keymap import hf_config, hf_to_meta, meta_to_hf
from geodino.models.loader import build_model, load_checkpoint, save_checkpoint
from geodino.models.pretrained import Preprocessing, PretrainedCfg
from geodino.models.provenance import RANDOM, WeightsInfo, verify_hash
from geodino.models.specs import REGISTRY, ArchSpec, WeightsSpec, get_spec, list_models
from geodino.models.store import cache_dir, download, find_weights
from geodino.models.vit import DinoVisionTransformer

__all__ = [
    "RANDOM",
    "REGISTRY",
    "ArchSpec",
    "DinoVisionTransformer",
    "Preprocessing",
    "PretrainedCfg",
    "WeightsInfo",
    "WeightsSpec",
    "build_model",
    "cache_dir",
    "download",
    "find_weights",
    "get_spec",
    "hf_config",
    "hf_to_meta",
    "list_models",
    "load_checkpoint",
    "meta_to_hf",
    "random_state_dict",
    "read_checkpoint",
    "save_checkpoint",
    "verify_hash",
]
