"""The Border weights dock: show the loss weight map ``w`` and the distances ``d1``, ``d2``.

``w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))**2 / (2 sigma**2))`` (Ronneberger et al.,
Eq. 2). The layers are added only when the user presses Compute; once there they follow
the labels as they are painted (debounced, 300 ms, recomputed in a worker; stacks on the
current slice only). The dock never changes the selected layer: the layers go below the
Labels layer, additively blended, so that the image and the labels stay visible and the
brush keeps painting into the Labels layer. The maps and the colour scale of ``w`` come
from :mod:`napari_unet.training.weight_maps`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels
from napari.utils.notifications import show_error
from qtpy.QtCore import QTimer, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QFormLayout,
    QPushButton,
    QSpinBox,
    QWidget,
)

from ..training.weight_maps import clip_distance, weights_iter
from .jobs import connect_event, start_job
from .layer_writes import write_image_slices
from .layers import LayerCombo, current_slice, prefer_labels, spatial_ndim
from .layout import fit_width, scroll_body, status_label

if TYPE_CHECKING:
    import napari

#: Names of the three layers.
W_NAME, D1_NAME, D2_NAME = "w", "d1", "d2"
DEBOUNCE_MS = 300


class BorderWeightsWidget(QWidget):
    """Add/update the image layers ``w``, ``d1`` and ``d2`` for a Labels layer.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer (injected by napari).
    """

    #: Emitted after the layers were updated (with the slice index, or -1 for 2D).
    updated = Signal(int)

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.worker: Any = None
        self._pending = False
        self._watched: Labels | None = None
        self._last_z: int | None = None

        self.labels_combo = LayerCombo(napari_viewer, Labels, self,
                                       prefer=prefer_labels(napari_viewer))
        self.w0_spin = QDoubleSpinBox(self)
        self.w0_spin.setRange(0.0, 1000.0)
        self.w0_spin.setValue(10.0)
        self.sigma_spin = QDoubleSpinBox(self)
        self.sigma_spin.setRange(0.1, 200.0)
        self.sigma_spin.setValue(5.0)
        self.sigma_spin.setSuffix(" px")
        self.balance_check = QCheckBox("class balance (w_c)", self)
        self.balance_check.setChecked(True)
        self.ignore_spin = QSpinBox(self)
        self.ignore_spin.setRange(-1, 2**31 - 1)
        self.ignore_spin.setValue(-1)
        self.ignore_spin.setSpecialValueText("none")
        self.ignore_spin.setToolTip("Label value marking unannotated pixels (weight 0)")
        self.auto_check = QCheckBox("update while painting", self)
        self.auto_check.setToolTip("Once computed, follow the painting (adds no layer by itself)")
        self.auto_check.setChecked(True)
        self.compute_button = QPushButton("Compute", self)
        self.status = status_label(self)
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setInterval(DEBOUNCE_MS)

        form = QFormLayout()
        form.addRow("labels", self.labels_combo)
        form.addRow("w0", self.w0_spin)
        form.addRow("σ", self.sigma_spin)
        form.addRow("", self.balance_check)
        form.addRow("ignore label", self.ignore_spin)
        form.addRow("", self.auto_check)
        layout = scroll_body(self)
        layout.addLayout(form)
        layout.addWidget(self.compute_button)
        layout.addWidget(self.status)
        layout.addStretch(1)
        fit_width(self)
        self._add_callbacks()
        self._watch(self.labels_combo.layer())

    def _add_callbacks(self) -> None:
        self.compute_button.clicked.connect(self.compute)
        self.timer.timeout.connect(self.compute)
        self.labels_combo.currentTextChanged.connect(self._on_layer_chosen)
        for spin in (self.w0_spin, self.sigma_spin, self.ignore_spin):
            spin.valueChanged.connect(self._schedule_if_shown)
        self.balance_check.toggled.connect(self._schedule_if_shown)
        connect_event(self, self.viewer.dims.events.current_step, self._on_step)

    # --- following the labels ------------------------------------------------------
    def _on_layer_chosen(self, *_: Any) -> None:
        self._watch(self.labels_combo.layer())

    def _watch(self, layer: Labels | None) -> None:
        old = self._watched
        if old is not None:
            for emitter in (old.events.paint, old.events.data):
                emitter.disconnect(self.schedule)
        self._watched = layer
        if layer is not None:
            layer.events.paint.connect(self.schedule)
            layer.events.data.connect(self.schedule)

    def schedule(self, *_: Any) -> None:
        """Recompute after the labels stop changing for 300 ms (auto-update on, layers shown)."""
        if self.auto_check.isChecked() and W_NAME in self.viewer.layers:
            self.timer.start()

    def _schedule_if_shown(self, *_: Any) -> None:
        self.schedule()

    def _on_step(self, *_: Any) -> None:
        layer = self.labels_combo.layer()
        if layer is None or spatial_ndim(layer) < 3:
            return
        if current_slice(self.viewer, layer) != self._last_z:
            self._schedule_if_shown()

    # --- computing -----------------------------------------------------------------
    def compute(self, *_: Any) -> Any:
        """Compute the maps for the chosen labels (current slice of stacks); returns the worker."""
        self.timer.stop()
        layer = self.labels_combo.layer()
        if layer is None:
            show_error("Border weights: add or choose a Labels layer first")
            return None
        if self.worker is not None:
            self._pending = True
            return self.worker
        z = current_slice(self.viewer, layer) if spatial_ndim(layer) >= 3 else None
        self._last_z = z
        labels = np.array(layer.data[z] if z is not None else layer.data)
        if labels.ndim != 2:
            show_error(f"Border weights: expected 2D labels or a stack, got {layer.data.shape}")
            return None
        ignore = self.ignore_spin.value()
        args = (labels, self.w0_spin.value(), self.sigma_spin.value(),
                self.balance_check.isChecked(), None if ignore < 0 else ignore)
        self.status.setText("computing…")

        def _done(result: tuple[Any, ...]) -> None:
            self._show(layer, z, *result)

        self.worker = start_job(lambda: weights_iter(*args), owner=self, viewer=self.viewer,
                                on_return=_done, on_finish=self._on_finished,
                                what="Border weights")
        return self.worker

    def _on_finished(self) -> None:
        self.worker = None
        if self._pending:
            self._pending = False
            self.compute()

    def _show(self, layer: Labels, z: int | None, w: np.ndarray, d1: np.ndarray,
              d2: np.ndarray, limits: tuple[float, float]) -> None:
        if layer not in self.viewer.layers:
            return
        sigma = self.sigma_spin.value()
        d_limits = (0.0, max(1.0, 6.0 * sigma))
        self._put(layer, D1_NAME, z, clip_distance(d1), "viridis", d_limits, visible=False)
        self._put(layer, D2_NAME, z, clip_distance(d2), "cividis", d_limits, visible=False)
        self._put(layer, W_NAME, z, w, "inferno", limits, gamma=0.6)
        where = f"slice {z}" if z is not None else "the image"
        top = float(w.max())
        note = f"; colours up to {limits[1]:.2f} show the border term" if top > limits[1] else ""
        self.status.setText(f"w on {where}: {limits[0]:.2f} … {top:.2f}{note}")
        self.updated.emit(-1 if z is None else z)

    def _put(self, labels: Labels, name: str, z: int | None, values: np.ndarray, cmap: str,
             limits: tuple[float, float], visible: bool = True, gamma: float = 1.0) -> None:
        shape = tuple(labels.data.shape)
        if name in self.viewer.layers and tuple(self.viewer.layers[name].data.shape) == shape:
            layer = self.viewer.layers[name]
            write_image_slices(layer, {z: values})
        else:
            layers = self.viewer.layers
            selected, active = set(layers.selection), layers.selection.active
            if name in layers:
                layers.remove(name)
            data = np.zeros(shape, np.float32)
            data[... if z is None else z] = values
            layer = Image(data, name=name, colormap=cmap, visible=visible, blending="additive",
                          opacity=0.7, gamma=gamma, scale=tuple(labels.scale),
                          translate=tuple(labels.translate), contrast_limits=limits)
            below = layers.index(labels) if labels in layers else len(layers)
            layers.insert(below, layer)  # under the Labels layer: the brush stays on it
            layers.selection.clear()
            layers.selection.update(selected)  # the user's selection, exactly as it was
            layers.selection.active = active
        layer.contrast_limits = limits
