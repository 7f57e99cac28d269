"""The model versions of a session: built-in, new, loaded from a file or fine-tuned.

A :class:`ModelVersion` is one entry of the GUI's model list (:mod:`napari_unet._qt.session`
keeps them); the Segment and Fine-tune jobs (:mod:`napari_unet.inference.segment_job`,
:mod:`napari_unet.training.finetune_jobs`) take one and load its model in their worker.
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .model_record import update_record

if TYPE_CHECKING:
    from .model import UNet

#: Name of the untrained default model offered when nothing better is available.
NEW_MODEL = "new (untrained)"
#: Architecture of that default model.
NEW_MODEL_ARCH: dict[str, Any] = {"base_channels": 16, "depth": 4}


@dataclass
class ModelVersion:
    """One entry of the model list.

    Attributes
    ----------
    name : str
        Unique display name.
    kind : str
        ``"builtin"``, ``"new"``, ``"file"`` or ``"fine-tuned"``.
    source : str or None
        Built-in name or file path to load from (None for in-memory models).
    created : datetime.datetime
        When the entry was added.
    parent : str or None
        Name of the version it was fine-tuned from.
    """

    name: str
    kind: str
    source: str | None = None
    created: dt.datetime = field(default_factory=dt.datetime.now)
    parent: str | None = None
    _model: UNet | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def get_model(self) -> UNet:
        """Return the model, loaded or built on first use (thread-safe; call it in a worker)."""
        with self._lock:
            if self._model is None:
                self._model = self._build()
            return self._model

    @property
    def loaded(self) -> bool:
        """Whether the model is in memory."""
        return self._model is not None

    def _build(self) -> UNet:
        if self.kind == "new":
            from .model import UNet

            model = UNet(**NEW_MODEL_ARCH)
        else:
            from .model_files import load_model

            model = load_model(self.source or self.name)
        update_record(model, only_missing=True, name=self.name)
        return model
