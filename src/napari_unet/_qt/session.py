"""Session-wide state shared by the docks: model versions and corrected-slice marks.

:func:`get_session` returns one :class:`Session` per process. Its model registry lists
the built-in models, a new untrained default, models loaded from files and every
fine-tuned version made in this session; one of them is *current* (what Segment
predicts with and what Fine-tune starts from). The slices a user marked as corrected
live in the Labels layer's ``metadata`` so that every dock sees the same marks.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QObject, Signal

from ..autosave import CORRECTED_KEY
from ..model_record import update_record
from ..model_versions import NEW_MODEL, ModelVersion

if TYPE_CHECKING:
    from napari.layers import Labels

    from ..model import UNet


class Session(QObject):
    """Model versions and correction marks shared by all napari-unet docks."""

    #: The list of versions changed.
    versions_changed = Signal()
    #: The current version changed (its name).
    current_changed = Signal(str)
    #: The corrected-slice marks of a Labels layer changed (the layer).
    corrected_changed = Signal(object)
    #: Corrected slices of a Labels layer are about to be overwritten (the layer, the
    #: slices): autosave keeps a backup of them first.
    overwriting = Signal(object, object)

    def __init__(self) -> None:
        super().__init__()
        self._versions: dict[str, ModelVersion] = {}
        self._current: str | None = None
        self._counter = 0
        self.reset()
        from .._readers import watch_models

        watch_models(self._on_model_read)  # model files dropped on the viewer

    # --- model versions ------------------------------------------------------------
    def reset(self) -> None:
        """Forget every version and list the built-in models plus the new default."""
        from ..model_files import list_builtin_models

        self._versions.clear()
        self._counter = 0
        for name in list_builtin_models():
            self._versions[name] = ModelVersion(name, "builtin", source=name)
        self._versions[NEW_MODEL] = ModelVersion(NEW_MODEL, "new")
        preferred = "nuclei-fluorescence"
        self._current = preferred if preferred in self._versions else next(iter(self._versions))
        self.versions_changed.emit()
        self.current_changed.emit(self._current)

    def versions(self) -> list[ModelVersion]:
        """All versions, in the order they were added."""
        return list(self._versions.values())

    def names(self) -> list[str]:
        """Names of all versions."""
        return list(self._versions)

    def get(self, name: str) -> ModelVersion:
        """Return the version called ``name`` (KeyError if unknown)."""
        return self._versions[name]

    def root(self, version: ModelVersion) -> ModelVersion:
        """The first ancestor of ``version`` that was not fine-tuned here (itself if none)."""
        seen = {version.name}
        while version.parent in self._versions and version.parent not in seen:
            version = self._versions[version.parent]
            seen.add(version.name)
        return version

    @property
    def current(self) -> ModelVersion:
        """The selected version."""
        return self._versions[self._current or NEW_MODEL]

    def set_current(self, name: str) -> None:
        """Select the version ``name`` (e.g. to roll back)."""
        if name not in self._versions:
            raise KeyError(f"no model version named {name!r}")
        if name != self._current:
            self._current = name
            self.current_changed.emit(name)

    def _unique(self, name: str) -> str:
        base, n = name, 2
        while name in self._versions:
            name, n = f"{base} ({n})", n + 1
        return name

    def add_model(
        self, model: UNet, *, kind: str = "fine-tuned", name: str | None = None,
        parent: str | None = None, select: bool = True,
    ) -> ModelVersion:
        """Add an in-memory model (a fine-tuned version) and optionally select it.

        Parameters
        ----------
        model : UNet
            The model; it is kept as is (not copied).
        kind : str
            Version kind.
        name : str, optional
            Display name; default ``"fine-tuned N (HH:MM:SS)"``.
        parent : str, optional
            The version it came from.
        select : bool
            Make it the current version.

        Returns
        -------
        ModelVersion
            The new entry.
        """
        now = dt.datetime.now()
        if name is None:
            self._counter += 1
            name = f"fine-tuned {self._counter} ({now:%H:%M:%S})"
        name = self._unique(name)
        version = ModelVersion(name, kind, created=now, parent=parent, _model=model)
        update_record(model, name=name)
        self._versions[name] = version
        self.versions_changed.emit()
        if select:
            self.set_current(name)
        return version

    def add_file(self, path: str | Path, *, select: bool = True, model: Any = None,
                 ) -> ModelVersion:
        """Add a model file (loaded lazily, unless ``model`` is it) and optionally select it."""
        p = Path(path)
        name = self._unique(p.name)
        version = ModelVersion(name, "file", source=str(p), _model=model)
        if isinstance(getattr(model, "record", None), dict):
            update_record(model, only_missing=True, name=name)
        self._versions[name] = version
        self.versions_changed.emit()
        if select:
            self.set_current(name)
        return version

    def _on_model_read(self, path: Path, model: Any) -> None:
        """A model file was opened through the plugin's reader: list it and select it."""
        from napari.utils.notifications import show_info

        version = self.add_file(path, model=model)
        show_info(f"napari-unet: model {version.name} added to the Segment dock's list")

    # --- corrected slices ----------------------------------------------------------
    @staticmethod
    def corrected(layer: Labels) -> list[int]:
        """Slices of ``layer`` marked as corrected (sorted)."""
        return sorted(int(z) for z in layer.metadata.get(CORRECTED_KEY, []))

    def set_corrected(self, layer: Labels, slices: list[int]) -> None:
        """Replace the corrected marks of ``layer`` and notify the docks."""
        layer.metadata[CORRECTED_KEY] = sorted({int(z) for z in slices})
        self.corrected_changed.emit(layer)

    def toggle_corrected(self, layer: Labels, z: int) -> bool:
        """Mark slice ``z`` as corrected, or unmark it; returns the new state."""
        marks = set(self.corrected(layer))
        state = z not in marks
        marks.symmetric_difference_update({int(z)})
        self.set_corrected(layer, sorted(marks))
        return state


_SESSION: Session | None = None


def get_session() -> Session:
    """Return the process-wide :class:`Session` (created on first use)."""
    global _SESSION
    if _SESSION is None:
        _SESSION = Session()
    return _SESSION
