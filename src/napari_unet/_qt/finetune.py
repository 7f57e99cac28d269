"""The Fine-tune dock: correct, mark slices, train a new model version, review it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from .common import (
    LayerCombo,
    connect_event,
    current_slice,
    image_channel_axis,
    same_layer,
    spatial_ndim,
    start_job,
)
from .correct import CorrectionPanel
from .finetune_jobs import finetune_iter, labels_snapshot, preview_iter
from .finetune_scan import SliceScanMixin
from .plot import LossPlot
from .segment import DEVICES, ask_overwrite
from .segment_job import SegmentRequest, apply_segmentation, confirm_targets, labels_name
from .segment_job import segment_iter as _segment_iter
from .session import get_session
from .slices import SliceList
from .versions import VersionsPanel

if TYPE_CHECKING:
    import napari


class FineTuneWidget(SliceScanMixin, QWidget):
    """Fine-tune the current model on corrected slices; each run adds a model version.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer (injected by napari).

    Attributes
    ----------
    confirm_overwrite : callable
        Asked before "predict after training" overwrites a corrected slice.
    worker, preview_worker, predict_worker : GeneratorWorker or None
        The running jobs.
    """

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        from ..loop import RoundConfig

        defaults = RoundConfig().train
        self.viewer = napari_viewer
        self.session = get_session()
        self.worker: Any = None
        self.preview_worker: Any = None
        self.predict_worker: Any = None
        self.scan_worker: Any = None  # large stacks are scanned for annotations off the GUI thread
        self._rescan = False
        self.confirm_overwrite: Callable[[Sequence[int]], bool] = lambda s: ask_overwrite(self, s)

        self.image_combo = LayerCombo(napari_viewer, Image, self)
        self.labels_combo = LayerCombo(napari_viewer, Labels, self)
        self.slice_list = SliceList(self)
        self.detect_button = QPushButton("Detect annotated slices", self)
        self.correction = CorrectionPanel(napari_viewer, self.labels_combo.layer,
                                          self.image_combo.layer, self)
        self.steps_spin = QSpinBox(self)
        self.steps_spin.setRange(0, 100000)
        self.steps_spin.setSpecialValueText("auto")
        self.steps_spin.setToolTip("auto: scaled to the amount of corrected data")
        self.steps_spin.setValue(defaults.steps)
        self.lr_spin = QDoubleSpinBox(self)
        self.lr_spin.setDecimals(6)
        self.lr_spin.setRange(1e-6, 1.0)
        self.lr_spin.setSingleStep(1e-4)
        self.lr_spin.setValue(defaults.lr)
        self.tile_spin = QSpinBox(self)
        self.tile_spin.setRange(16, 2048)
        self.tile_spin.setSingleStep(16)
        self.tile_spin.setValue(defaults.tile)
        self.tile_spin.setSuffix(" px")
        self.device_combo = QComboBox(self)
        self.device_combo.addItems(DEVICES)
        self.augment_check = QCheckBox("augmentation", self)
        self.augment_check.setToolTip("Elastic deformation, flips, rotations, intensity")
        self.augment_check.setChecked(True)
        self.preview_button = QPushButton("Preview", self)
        self.preview_button.setToolTip("Add one augmented sample of the current slice as layers")
        self.anchor_check = QCheckBox("keep uncorrected slices (anchor)", self)
        self.anchor_check.setToolTip("Stacks: keep the model's predictions on three uncorrected "
                                     "slices while it learns the corrections")
        self.anchor_check.setChecked(defaults.anchor_weight > 0)
        self.scratch_check = QCheckBox("start from scratch", self)
        self.scratch_check.setToolTip("Train a new network of the current model's shape: for "
                                      "data far from every starter model")
        self.predict_after_check = QCheckBox("segment current slice afterwards", self)
        self.predict_after_check.setChecked(True)
        self.start_button = QPushButton("Start", self)
        self.stop_button = QPushButton("Stop", self)
        self.stop_button.setEnabled(False)
        self.progress = QProgressBar(self)
        self.plot = LossPlot(self)
        self.status = QLabel("", self)
        self.status.setWordWrap(True)
        self.versions = VersionsPanel(self)
        self._watched: Labels | None = None
        self.refresh_timer = QTimer(self)
        self.refresh_timer.setSingleShot(True)
        self.refresh_timer.setInterval(500)

        form = QFormLayout()
        form.addRow("image", self.image_combo)
        form.addRow("labels", self.labels_combo)
        form.addRow("train on", self.slice_list)
        form.addRow("", self.detect_button)
        train_form = QFormLayout()
        train_form.addRow("steps", self.steps_spin)
        train_form.addRow("learning rate", self.lr_spin)
        train_form.addRow("crop size", self.tile_spin)
        train_form.addRow("device", self.device_combo)
        aug_row = QHBoxLayout()
        aug_row.addWidget(self.augment_check, 1)
        aug_row.addWidget(self.preview_button)
        train_form.addRow(aug_row)
        train_form.addRow(self.anchor_check)
        train_form.addRow(self.scratch_check)
        train_form.addRow(self.predict_after_check)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.stop_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.correction)
        layout.addLayout(train_form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.plot)
        layout.addWidget(self.status)
        layout.addWidget(self.versions)
        layout.addStretch(1)

        self._pair_labels()
        self._on_layers_chosen()
        self._add_callbacks()

    def _add_callbacks(self) -> None:
        self.image_combo.currentTextChanged.connect(self._on_image_chosen)
        self.labels_combo.currentTextChanged.connect(self._on_layers_chosen)
        self.detect_button.clicked.connect(self.refresh_slices)
        self.start_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(self.stop)
        self.preview_button.clicked.connect(self.preview_augmentation)
        self.session.corrected_changed.connect(self._on_marks)
        self.correction.resumed.connect(self.labels_combo.set_layer)
        self.refresh_timer.timeout.connect(self.refresh_slices)
        connect_event(self, self.viewer.layers.events.inserted, self._on_layer_added)

    # --- layers --------------------------------------------------------------------
    def _pair_labels(self) -> None:
        """Prefer the Labels layer Segment writes for the chosen image."""
        image = self.image_combo.layer()
        if image is not None and labels_name(image) in self.viewer.layers:
            self.labels_combo.set_layer(labels_name(image))

    def _on_image_chosen(self, *_: Any) -> None:
        self._pair_labels()
        self._on_layers_chosen()

    def _on_layer_added(self, event: Any) -> None:
        image = self.image_combo.layer()
        if image is not None and event.value.name == labels_name(image):
            self.labels_combo.set_layer(event.value)

    def _on_layers_chosen(self, *_: Any) -> None:
        self.slice_list.reset()
        labels = self.labels_combo.layer()
        self.correction.attach(labels, self.image_combo.layer())
        self._watch(labels)
        self.refresh_slices()

    def _watch(self, labels: Labels | None) -> None:
        """Re-detect annotated slices (debounced) while ``labels`` is painted or replaced."""
        old, self._watched = self._watched, labels
        if old is not None:
            for emitter in (old.events.paint, old.events.data):
                emitter.disconnect(self._schedule_refresh)
        if labels is not None:
            for emitter in (labels.events.paint, labels.events.data):
                connect_event(self, emitter, self._schedule_refresh)

    def _schedule_refresh(self, *_: Any) -> None:
        self.refresh_timer.start()

    def _on_marks(self, layer: Any) -> None:
        if same_layer(layer, self.labels_combo.layer()):
            self.refresh_slices()

    # --- training ------------------------------------------------------------------
    def train_config(self) -> Any:
        """Build the round's :class:`~napari_unet.loop.RoundConfig` from the dock's settings."""
        from ..augment import AugmentConfig
        from ..loop import RoundConfig

        cfg = RoundConfig(start="scratch" if self.scratch_check.isChecked() else "parent")
        t = cfg.train
        t.steps = self.steps_spin.value()  # 0: scaled to the corrected data
        t.lr, t.tile, t.device = self.lr_spin.value(), self.tile_spin.value(), \
            self.device_combo.currentText()
        t.augment = AugmentConfig(enabled=self.augment_check.isChecked())
        t.anchor_weight = t.anchor_weight if self.anchor_check.isChecked() else 0.0
        return cfg

    def start(self, *_: Any) -> Any:
        """Fine-tune the current model version on the ticked slices; returns the worker."""
        image, labels = self.image_combo.layer(), self.labels_combo.layer()
        if image is None or labels is None:
            show_error("Fine-tune: choose an image and a Labels layer")
            return None
        if self.worker is not None:
            return self.worker
        slices = self.slice_list.checked()
        if not slices:
            show_error("Fine-tune: tick at least one annotated slice (or mark one corrected)")
            return None
        stack = spatial_ndim(labels) >= 3
        version, config = self.session.current, self.train_config()
        images = image.data
        lab = labels_snapshot(labels.data, slices if stack else None)  # painting goes on
        axis = image_channel_axis(image)
        self.plot.clear()
        self.progress.setMaximum(max(1, config.train.steps))
        self.progress.setValue(0)
        self._set_running(True)
        self.status.setText(f"fine-tuning {version.name} on slices {slices}…")

        def _done(model: Any) -> None:
            self._on_trained(model, version.name, slices)

        self.worker = start_job(
            lambda: finetune_iter(version, images, lab, config, slices if stack else None, axis),
            owner=self, viewer=self.viewer, on_yield=self._on_step, on_return=_done,
            on_finish=self._on_finished, what="Fine-tune",
        )
        return self.worker

    def _on_step(self, event: Any) -> None:
        if isinstance(event, str):  # recalibration after training
            self.status.setText(event)
            return
        self.progress.setMaximum(int(event.steps))
        self.progress.setValue(int(event.step))
        self.plot.add(event.step, event.loss)
        self.status.setText(f"step {event.step}/{event.steps}: loss {event.loss:.4f} "
                            f"({event.elapsed:.1f} s)")

    def _on_trained(self, result: Any, parent: str, slices: list[int]) -> None:
        """Add the new version; make it current only when its self-check beat the parent."""
        version = self.session.add_model(result.model, parent=parent, select=result.accepted)
        self.plot.redraw()
        summary = result.report.summary()
        if result.accepted:
            self.status.setText(f"new version: {version.name} (from {parent}, slices {slices})"
                                f"; {summary}")
        else:
            self.status.setText(f"{version.name} is NOT better than {parent} on your "
                                f"corrections, so {parent} stays selected ({summary}). Choose "
                                f"{version.name} in the list to use it anyway.")
            show_info(f"Fine-tune: the new version is not better than {parent}; kept {parent}")
        if self.predict_after_check.isChecked() and result.accepted:
            self.predict_current_slice()

    def stop(self, *_: Any) -> None:
        """Cancel training; the current model version stays as it was."""
        if self.worker is not None:
            self.worker.quit()
            self.status.setText("stopping…")

    def _on_finished(self) -> None:
        aborted = self.worker is not None and self.worker.abort_requested
        self.worker = None
        self._set_running(False)
        if aborted:
            self.status.setText(f"cancelled; still using {self.session.current.name}")

    def _set_running(self, running: bool) -> None:
        self.start_button.setEnabled(not running)
        self.stop_button.setEnabled(running)

    # --- after training ------------------------------------------------------------
    def predict_current_slice(self) -> Any:
        """Segment the current slice with the current version; returns the worker.

        A corrected slice is only overwritten after :attr:`confirm_overwrite` agrees.
        """
        image = self.image_combo.layer()
        if image is None or self.predict_worker is not None:
            return None
        stack = spatial_ndim(image) >= 3
        z = current_slice(self.viewer, image)
        target = labels_name(image)
        labels = self.viewer.layers[target] if target in self.viewer.layers else None
        if confirm_targets(labels, [z]) and not self.confirm_overwrite([z]):
            show_info(f"Slice {z} is marked as corrected; not segmented again")
            return None
        req = SegmentRequest(image=image.data, channel_axis=image_channel_axis(image),
                             slices=[z] if stack else None,
                             device=self.device_combo.currentText())
        version = self.session.current

        def _done(out: Any) -> None:
            if image in self.viewer.layers:
                try:
                    apply_segmentation(self.viewer, image, out)
                except ValueError as err:
                    show_error(f"Segment: {err}")

        def _finished() -> None:
            self.predict_worker = None

        self.predict_worker = start_job(
            lambda: _segment_iter(version, req), owner=self, viewer=self.viewer,
            on_return=_done, on_finish=_finished, what="Segment",
        )
        return self.predict_worker

    def preview_augmentation(self, *_: Any, seed: int | None = None) -> Any:
        """Add one augmented sample of the current slice (image and labels layers)."""
        image, labels = self.image_combo.layer(), self.labels_combo.layer()
        if image is None or labels is None:
            show_error("Preview: choose an image and a Labels layer")
            return None
        z = current_slice(self.viewer, labels) if spatial_ndim(labels) >= 3 else None
        img = np.asarray(image.data[z] if z is not None and spatial_ndim(image) >= 3
                         else image.data)
        lab = np.asarray(labels.data[z] if z is not None else labels.data)
        axis = image_channel_axis(image)
        shift = np.asarray(labels.scale[-2:]) * np.asarray(lab.shape[-2:]) * (0, 1.1)
        translate = tuple(np.asarray(labels.translate[-2:]) + shift)
        scale = tuple(labels.scale[-2:])

        def _done(result: tuple[np.ndarray, np.ndarray]) -> None:
            self._show_preview(*result, scale=scale, translate=translate)

        def _finished() -> None:
            self.preview_worker = None

        self.preview_worker = start_job(
            lambda: preview_iter(img, lab, axis, seed), owner=self, viewer=self.viewer,
            on_return=_done, on_finish=_finished, what="Augmentation preview",
        )
        return self.preview_worker

    def _show_preview(self, img: np.ndarray, lab: np.ndarray, *, scale: tuple,
                      translate: tuple) -> None:
        show = img[0] if img.ndim == 3 and img.shape[0] == 1 else img
        rgb = show.ndim == 3 and show.shape[0] in (3, 4)
        if rgb:
            show = np.clip(np.moveaxis(show, 0, -1), 0, 1)
        elif show.ndim == 3:
            show = show[0]
        for name, data, kind in (("augmented image", show, "image"),
                                 ("augmented labels", lab, "labels")):
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)
            if kind == "image":
                extra = {"rgb": True} if rgb else {"colormap": "gray"}
                self.viewer.add_image(data, name=name, scale=scale, translate=translate, **extra)
            else:
                self.viewer.add_labels(data, name=name, scale=scale, translate=translate,
                                       opacity=0.5)
        self.status.setText("augmented sample added (right of the image)")
