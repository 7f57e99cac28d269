"""Correction tools napari's Labels layer lacks, and autosave/resume controls.

* **Mark slice corrected** (Shift-M): toggles the current slice's mark; saved at once.
* **New label**: napari's own "new label" action (``napari:new_label``, key M in a Labels
  layer: ``selected_label = max + 1``) plus paint mode and selecting the layer. No key of
  our own: napari's M already does it, and a second key for it would only collide.
* **Erase object** (Shift-E): removes the object under the mouse cursor (current slice).

The keys are bound on the viewer while the dock is open, and unbound when it is closed
(napari re-parents a closed dock's widget rather than deleting it) or destroyed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..autosave import default_autosave_dir, read_autosave
from .autosaver import Autosaver
from .jobs import DockWatcher, connect_event
from .layers import current_slice, same_layer, spatial_ndim
from .layout import status_label
from .session import get_session

if TYPE_CHECKING:
    import napari
    from napari.layers import Image, Labels

KEY_MARK, KEY_ERASE = "Shift-M", "Shift-E"
#: napari's action that selects a new label id, and its default key.
NEW_LABEL_ACTION, KEY_NEW = "napari:new_label", "M"


class CorrectionPanel(QGroupBox):
    """Mark / new label / erase buttons with viewer key bindings, and autosave.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer (the keys are bound on it).
    get_labels, get_image : callable
        Return the Labels layer being corrected and its Image layer (or None).
    parent : QWidget, optional
        Parent widget.
    """

    #: A file was resumed into this Labels layer.
    resumed = Signal(object)

    def __init__(self, viewer: napari.Viewer, get_labels: Callable[[], Labels | None],
                 get_image: Callable[[], Image | None], parent: QWidget | None = None) -> None:
        super().__init__("Correct", parent)
        self.viewer = viewer
        self.session = get_session()
        self._get_labels = get_labels
        self._get_image = get_image
        self.autosaver = Autosaver(self)

        self.mark_button = QPushButton(f"Mark slice corrected ({KEY_MARK})", self)
        self.new_button = QPushButton(f"New label ({new_label_key()})", self)
        self.erase_button = QPushButton(f"Erase object ({KEY_ERASE})", self)
        self.new_button.setToolTip("napari's new label action: an unused label id (largest + 1)"
                                   ", then paint")
        self.erase_button.setToolTip("Remove the object under the mouse cursor (current slice)")
        self.marks_label = status_label(self)
        self.marks_label.setText("corrected: none")
        self.autosave_check = QCheckBox("autosave", self)
        self.autosave_check.setChecked(True)
        self.folder_edit = QLineEdit(self)
        self.folder_edit.setPlaceholderText(f"beside the image, else {default_autosave_dir()}")
        self.browse_button = QPushButton("…", self)
        self.browse_button.setToolTip("Choose the autosave folder")
        self.resume_button = QPushButton("Resume…", self)
        self.resume_button.setToolTip("Re-open an autosave file: labels and corrected slices")
        self.save_label = status_label(self)

        grid = QGridLayout()
        grid.addWidget(self.mark_button, 0, 0, 1, 2)
        grid.addWidget(self.new_button, 1, 0)
        grid.addWidget(self.erase_button, 1, 1)
        folder_row = QHBoxLayout()
        folder_row.addWidget(self.autosave_check)
        folder_row.addWidget(self.folder_edit, 1)
        folder_row.addWidget(self.browse_button)
        folder_row.addWidget(self.resume_button)
        layout = QVBoxLayout(self)
        layout.addLayout(grid)
        layout.addWidget(self.marks_label)
        layout.addLayout(folder_row)
        layout.addWidget(self.save_label)
        self._add_callbacks()
        self._bind_keys(parent if parent is not None else self)

    def _add_callbacks(self) -> None:
        self.mark_button.clicked.connect(self.toggle_mark)
        self.new_button.clicked.connect(self.new_label)
        self.erase_button.clicked.connect(self.erase_under_cursor)
        self.autosave_check.toggled.connect(self._on_autosave_toggled)
        self.folder_edit.editingFinished.connect(self._on_folder_edited)
        self.browse_button.clicked.connect(self._browse_folder)
        self.resume_button.clicked.connect(self.resume)
        self.autosaver.saved.connect(self._on_saved)
        self.session.corrected_changed.connect(self._on_marks)
        connect_event(self, self.viewer.dims.events.current_step, self._on_step)

    def _on_step(self, *_: Any) -> None:
        self._on_marks(None)

    def _bind_keys(self, dock: QWidget) -> None:
        alive = [True]
        viewer = self.viewer
        actions = {KEY_MARK: self.toggle_mark, KEY_ERASE: self.erase_under_cursor}

        def make(action: Callable[[], Any]) -> Callable[[Any], None]:
            def handler(_viewer: Any) -> None:
                if alive[0]:
                    action()
            return handler

        handlers = {key: make(action) for key, action in actions.items()}
        for key, handler in handlers.items():
            viewer.bind_key(key, handler, overwrite=True)

        def unbind(*_: Any) -> None:
            alive[0] = False
            for key, handler in handlers.items():
                try:
                    if viewer.keymap.get(_key(key)) is handler:
                        viewer.bind_key(key, None)
                except (KeyError, ValueError, AttributeError, RuntimeError):
                    pass

        self.destroyed.connect(unbind)
        self.dock_watcher = DockWatcher(dock)
        self.dock_watcher.closed.connect(unbind)
        self.dock_watcher.closed.connect(self.autosaver.flush)
        self.unbind_keys = unbind

    # --- the layer being corrected -------------------------------------------------
    def attach(self, labels: Labels | None, image: Image | None) -> None:
        """Follow ``labels`` (autosave, marks display)."""
        self.autosaver.attach(labels, image)
        self._on_marks(labels)
        path = self.autosaver.path
        self.save_label.setText(f"autosave: {path}" if path is not None else "")

    def _on_marks(self, layer: Any) -> None:
        labels = self._get_labels()
        if layer is not None and not same_layer(layer, labels):
            return
        marks = self.session.corrected(labels) if labels is not None else []
        self.marks_label.setText("corrected: " + (", ".join(map(str, marks)) or "none"))
        z = current_slice(self.viewer, labels) if labels is not None else 0
        self.mark_button.setText(("Unmark slice" if z in marks else "Mark slice corrected")
                                 + f" ({KEY_MARK})")

    # --- actions -------------------------------------------------------------------
    def toggle_mark(self, *_: Any) -> bool | None:
        """Mark the current slice as corrected (or unmark it); saved immediately."""
        labels = self._get_labels()
        if labels is None:
            show_error("Mark slice: choose the Labels layer you corrected first")
            return None
        z = current_slice(self.viewer, labels)
        state = self.session.toggle_corrected(labels, z)
        self.viewer.status = f"slice {z} {'marked' if state else 'unmarked'} as corrected"
        return state

    def new_label(self, *_: Any) -> int | None:
        """Select a new, unused label id (max + 1) and switch to painting."""
        labels = self._get_labels()
        if labels is None:
            return None
        from napari.utils.action_manager import action_manager

        labels.visible = True  # painting into a hidden layer shows nothing
        self.viewer.layers.selection.active = labels
        try:
            action_manager.trigger(NEW_LABEL_ACTION)  # acts on the active Labels layer
        except KeyError:  # napari without the action
            labels.selected_label = int(np.max(labels.data)) + 1 if labels.data.size else 1
        labels.mode = "paint"
        return int(labels.selected_label)

    def erase_under_cursor(self, *_: Any, position: Any = None) -> int:
        """Remove the object under the cursor (or at world ``position``); returns its id."""
        labels = self._get_labels()
        if labels is None:
            return 0
        pos = self.viewer.cursor.position if position is None else position
        coord = np.round(labels.world_to_data(pos)).astype(int)[-labels.ndim:]
        shape = labels.data.shape
        if np.any(coord < 0) or np.any(coord >= np.asarray(shape)):
            return 0
        value = int(labels.data[tuple(coord)])
        if value == 0:
            return 0
        if spatial_ndim(labels) >= 3:
            z = int(coord[-3])
            ys, xs = np.nonzero(np.asarray(labels.data[z]) == value)
            indices = (np.full_like(ys, z), ys, xs)
            lead = tuple(np.full_like(ys, c) for c in coord[:-3])
            indices = lead + indices
        else:
            indices = np.nonzero(np.asarray(labels.data) == value)
        if not labels.visible:  # napari only edits the displayed slice of visible layers
            labels.visible = True
        labels.data_setitem(indices, 0)  # undoable; emits paint (autosave, weights)
        return value

    # --- autosave ------------------------------------------------------------------
    def _on_autosave_toggled(self, on: bool) -> None:
        self.autosaver.enabled = on
        if on:
            self.autosaver.save_now()

    def _on_folder_edited(self) -> None:
        self.set_folder(self.folder_edit.text().strip() or None)

    def set_folder(self, folder: str | Path | None) -> None:
        """Save into ``folder`` (None: beside the image, else the default folder)."""
        self.autosaver.folder = Path(folder).expanduser() if folder else None
        self.folder_edit.setText(str(folder or ""))
        path = self.autosaver.path
        self.save_label.setText(f"autosave: {path}" if path is not None else "")

    def _browse_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Autosave folder",
                                                  str(default_autosave_dir()))
        if folder:
            self.set_folder(folder)

    def _on_saved(self, path: str) -> None:
        self.save_label.setText(f"saved {Path(path).name} ({Path(path).parent})")

    def resume(self, *_: Any, path: str | Path | None = None) -> Labels | None:
        """Re-open an autosave file: restore its labels and corrected marks.

        Parameters
        ----------
        path : path, optional
            The file; default: this layer's autosave if it exists, else ask.

        Returns
        -------
        napari.layers.Labels or None
            The restored layer.
        """
        if path is None:
            default = self.autosaver.path
            if default is not None and default.is_file():
                path = default
            else:
                path, _ = QFileDialog.getOpenFileName(
                    self, "Resume from autosave", str(default_autosave_dir()),
                    "napari-unet autosave (*.autosave.npz);;All files (*)")
                if not path:
                    return None
        try:
            data, marks, meta = read_autosave(path)
        except (OSError, ValueError, KeyError) as err:
            show_error(f"Resume: cannot read {path}: {err}")
            return None
        name = meta.get("layer") or Path(path).name.split(".")[0]
        if name in self.viewer.layers and self.viewer.layers[name].data.shape == data.shape:
            layer = self.viewer.layers[name]
            layer.data = data
        else:
            image = self._get_image()
            kwargs: dict[str, Any] = {}
            if image is not None and image.ndim == data.ndim:
                kwargs = {"scale": tuple(image.scale), "translate": tuple(image.translate)}
            layer = self.viewer.add_labels(data, name=name, **kwargs)
        self.session.set_corrected(layer, marks)
        show_info(f"Resumed {name} from {path} (corrected slices: {marks or 'none'})")
        self.resumed.emit(layer)
        return layer


def new_label_key() -> str:
    """The key napari binds to its new label action (``"M"`` by default)."""
    try:
        from napari.utils.action_manager import action_manager

        shortcuts = action_manager._shortcuts.get(NEW_LABEL_ACTION, [])  # noqa: SLF001
        return str(next(iter(shortcuts))) if shortcuts else KEY_NEW
    except (ImportError, AttributeError, TypeError):
        return KEY_NEW


def _key(key: str) -> Any:
    from napari.utils.key_bindings import coerce_keybinding

    return coerce_keybinding(key)
