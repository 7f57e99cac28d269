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

import sys
import types
from importlib import import_module
from typing import Any

__version__ = "0.1.0"

#: Public name -> module holding it.
_API = {
    "UNet": "model", "UNetConfig": "model",
    "load_model": "io", "save_model": "io",
    "predict": "predict", "predict_iter": "predict", "run": "predict",
    "labels_from_probabilities": "postprocess",
    "finetune_round": "loop", "RoundConfig": "loop", "RoundResult": "loop",
    "TrainConfig": "train", "fine_tune": "train",
    "border_weight_map": "weights", "border_distances": "weights",
    "separation_borders": "weights",
    "elastic_deform": "augment",
    "Normalization": "normalize",
    "load_nuclei": "_sample_data",
    "export_bioimageio": "bioimageio_export",
}
__all__ = ["__version__", *_API]


class _PredictModule(types.ModuleType):
    """The ``napari_unet.predict`` submodule, callable as :func:`napari_unet.predict.predict`.

    The function and its module share a name: once the module is imported, Python binds
    ``napari_unet.predict`` to the module. Calling the module calls the function, so that
    ``napari_unet.predict(model, image)`` works either way.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.predict(*args, **kwargs)


class _Package(types.ModuleType):
    """The package module: makes the ``predict`` submodule callable when it is bound."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "predict" and type(value) is types.ModuleType:
            value.__class__ = _PredictModule
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    if name == "predict":
        return import_module(".predict", __name__)  # bound as a callable module
    if name in _API:
        return getattr(import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module 'napari_unet' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
