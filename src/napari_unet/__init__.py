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
    "load_model": "io", "save_model": "io",
    "predict": "predict", "predict_iter": "predict",
    "labels_from_probabilities": "postprocess",
    "finetune_round": "loop", "RoundConfig": "loop", "RoundResult": "loop",
    "TrainConfig": "train", "fine_tune": "train",
    "border_weight_map": "weights", "border_distances": "weights",
    "separation_borders": "weights",
    "elastic_deform": "augment",
    "Normalization": "normalize",
    "export_bioimageio": "bioimageio_export",
}
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module 'napari_unet' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
