"""napari-unet: human-in-the-loop U-Net segmentation for napari.

The public API, imported lazily (``import napari_unet`` stays cheap for napari's plugin
discovery)::

    from napari_unet import load_model, predict, finetune_round, RoundConfig
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_API = {
    "UNet": "model", "UNetConfig": "model",
    "load_model": "io", "save_model": "io",
    "predict": "predict", "predict_iter": "predict",
    "labels_from_probabilities": "postprocess",
    "finetune_round": "loop", "RoundConfig": "loop", "RoundResult": "loop",
    "TrainConfig": "train", "fine_tune": "train",
    "border_weight_map": "weights",
    "Normalization": "normalize",
}
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module 'napari_unet' has no attribute {name!r}")
