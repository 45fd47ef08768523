"""Prediction heads on DINOv3 features: the CHMv2 canopy-height DPT decoder."""

from geodino.heads.chmv2 import CanopyHeightModel, build_canopy_model, save_canopy_model
from geodino.heads.chmv2_keys import head_hf_to_meta, head_meta_to_hf, hf_chmv2_config
from geodino.heads.dpt import DPTConfig, DPTDecoder, bins_to_metres, mixlog_bins, random_decoder_state_dict
from geodino.heads.specs import HEADS, HeadSpec, get_head, list_heads
from geodino.models.pretrained import CHMV2_MEAN, CHMV2_STD

__all__ = [
    "CHMV2_MEAN",
    "CHMV2_STD",
    "HEADS",
    "CanopyHeightModel",
    "DPTConfig",
    "DPTDecoder",
    "HeadSpec",
    "bins_to_metres",
    "build_canopy_model",
    "get_head",
    "head_hf_to_meta",
    "head_meta_to_hf",
    "hf_chmv2_config",
    "list_heads",
    "mixlog_bins",
    "random_decoder_state_dict",
    "save_canopy_model",
]
