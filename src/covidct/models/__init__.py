"""Model registry, the four papers' architectures, checkpoints and inference.

Public API: `create_model`, `list_models`, `register_model`, `save_checkpoint`, `load_checkpoint`,
`Checkpoint`, `predict_volume`, `predict_tensor`, `ScanPrediction`, `count_params`, `count_macs`,
`count_flops`, `CovidCTModel`.
"""

from covidct.models.base import CovidCTModel
from covidct.models.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from covidct.models.complexity import count_flops, count_macs, count_params
from covidct.models.inference import ScanPrediction, predict_tensor, predict_volume
from covidct.models.registry import (
    ModelDefaults,
    check_model_inputs,
    create_model,
    get_model_class,
    list_models,
    model_defaults,
    register_model,
)

__all__ = [
    "Checkpoint",
    "ScanPrediction",
    "CovidCTModel",
    "count_flops",
    "count_macs",
    "count_params",
    "create_model",
    "get_model_class",
    "list_models",
    "load_checkpoint",
    "predict_tensor",
    "predict_volume",
    "register_model",
    "ModelDefaults",
    "check_model_inputs",
    "model_defaults",
    "save_checkpoint",
]
