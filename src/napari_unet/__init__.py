"""napari-unet: human-in-the-loop U-Net segmentation for napari.

The public API, imported lazily (``import napari_unet`` stays cheap for napari's plugin
discovery and imports neither napari nor Qt; each name loads its module on first use)::

    import napari_unet as nu

    model = nu.load_model("nuclei-fluorescence")
    probabilities = nu.predict(model, image)
    labels = nu.labels_from_probabilities(probabilities)

See ``docs/api.md`` for one example per function.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

#: Public name -> module holding it.
_API = {
    "UNet": "model", "UNetConfig": "model",
    "load_model": "model_files", "save_model": "model_files",
    "predict": "inference.predict", "predict_iter": "inference.predict",
    "PredictConfig": "inference.predict_config",
    "run": "jobs",
    "labels_from_probabilities": "inference.postprocess",
    "PostprocessConfig": "inference.postprocess",
    "finetune_round": "training.loop", "RoundConfig": "training.loop",
    "RoundResult": "training.report",
    "TrainConfig": "training.train", "fine_tune": "training.train",
    "border_weight_map": "training.border_weights",
    "border_distances": "training.border_weights",
    "separation_borders": "training.border_weights",
    "elastic_deform": "training.augment",
    "Normalization": "normalize",
    "load_nuclei": "_sample_data",
    "export_bioimageio": "bioimageio.export",
}
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module 'napari_unet' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
