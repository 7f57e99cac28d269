"""The Fine-tune dock: correct, mark slices, train a new model version, review it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from napari.layers import Image, Labels
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QProgressBar,
    QPushButton,
    QWidget,
)

from ..jobs import Stage
from ..training.finetune_jobs import finetune_iter, finetune_pairs_iter
from .controls import check_box, spin_box
from .correct import CorrectionPanel
from .dialogs import ask_train_unmarked
from .finetune_after import AfterTrainingMixin
from .finetune_pairs import PairList, round_pairs
from .finetune_scan import SliceScanMixin
from .jobs import connect_event, start_job
from .layers import LayerCombo, image_channel_axis, prefer_labels, same_layer, spatial_ndim
from .layout import fit_width, scroll_body, status_label
from .plot import LossPlot
from .segment import DEVICES
from .segment_layers import labels_name
from .session import get_session
from .slices import SliceList
from .throttle import Throttle
from .versions import VersionsPanel

if TYPE_CHECKING:
    import napari


class FineTuneWidget(AfterTrainingMixin, SliceScanMixin, QWidget):
    """Fine-tune the current model on corrected slices; each run adds a model version.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer (injected by napari).

    Attributes
    ----------
    confirm_unmarked : callable
        ``confirm_unmarked(slices) -> bool``, asked before training on ticked slices that
        are not marked as corrected; replace it to answer without a dialog.
    worker, preview_worker, predict_worker : GeneratorWorker or None
        The running jobs.
    """

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        from ..training.loop import RoundConfig

        defaults = RoundConfig().train
        self.viewer = napari_viewer
        self.session = get_session()
        self.worker: Any = None
        self.preview_worker: Any = None
        self.predict_worker: Any = None
        self.scan_worker: Any = None  # large stacks are scanned for annotations off the GUI thread
        self._rescan = False
        self.confirm_unmarked: Callable[[Sequence[int]], bool] = \
            lambda s: ask_train_unmarked(self, s)
        self._training_labels: Any = None

        self._make_controls(defaults)
        self._throttle = Throttle(self._show_step, parent=self)
        self.versions = VersionsPanel(self)
        self._watched: Labels | None = None
        self.refresh_timer = QTimer(self)
        self.refresh_timer.setSingleShot(True)
        self.refresh_timer.setInterval(500)
        self._lay_out()
        self._pair_labels()
        self._on_layers_chosen()
        self._add_callbacks()

    def _make_controls(self, defaults: Any) -> None:
        """Create the dock's controls (their order is the default Tab order).

        ``defaults`` is the round's default :class:`~napari_unet.training.train.TrainConfig`.
        """
        viewer = self.viewer
        self.image_combo = LayerCombo(viewer, Image, self)
        self.labels_combo = LayerCombo(viewer, Labels, self, prefer=prefer_labels(
            viewer, self._segment_labels_name))
        self.slice_list = SliceList(self)
        self.detect_button = QPushButton("Detect annotated slices", self)
        self.pairs = PairList(viewer, self.session, lambda: (
            self.image_combo.layer(), self.labels_combo.layer()), self)
        self.correction = CorrectionPanel(viewer, self.labels_combo.layer,
                                          self.image_combo.layer, self)
        self.steps_spin = spin_box(self, 0, 100000, special="auto", value=defaults.steps,
                                   tip="auto: scaled to the amount of corrected data")
        self.lr_spin = spin_box(self, 1e-6, 1.0, double=True, decimals=6, step=1e-4,
                                value=defaults.lr)
        self.tile_spin = spin_box(self, 16, 2048, step=16, value=defaults.tile, suffix=" px")
        self.device_combo = QComboBox(self)
        self.device_combo.addItems(DEVICES)
        self.augment_check = check_box("augmentation", self, checked=True,
                                       tip="Elastic deformation, flips, rotations, intensity")
        self.preview_button = QPushButton("Preview", self)
        self.preview_button.setToolTip("Add one augmented sample of the current slice as layers")
        self.anchor_check = check_box(
            "keep uncorrected slices (anchor)", self, checked=defaults.anchor_weight > 0,
            tip="Stacks: keep the model's predictions on three uncorrected slices while it "
                "learns the corrections")
        self.scale_combo = QComboBox(self)
        self.scale_combo.addItems(["auto", "keep"])
        self.scale_combo.setToolTip("auto: when your objects' size differs from the size the "
                                    "model learned, the new version resamples its input to "
                                    "it; keep: the current version's input scale")
        self.smooth_combo = QComboBox(self)
        self.smooth_combo.addItems(["auto", "keep"])
        self.smooth_combo.setToolTip("auto: when the model segments your noisy corrections "
                                     "clearly better on smoothed images, the new version "
                                     "smooths its input; keep: the current version's")
        self.scratch_check = check_box("start from scratch", self, tip="Train a new network "
                                       "of the current model's shape: for data far from every "
                                       "starter model")
        self.predict_after_check = check_box("segment current slice afterwards", self,
                                             checked=True)
        self.start_button = QPushButton("Start", self)
        self.stop_button = QPushButton("Stop", self)
        self.stop_button.setEnabled(False)
        self.progress = QProgressBar(self)
        self.plot = LossPlot(self)
        self.plot.set_theme(str(viewer.theme))
        self.status = status_label(self)

    def _lay_out(self) -> None:
        """Put the controls into the scrollable body."""
        form = QFormLayout()
        form.addRow("image", self.image_combo)
        form.addRow("labels", self.labels_combo)
        form.addRow("train on", self.slice_list)
        form.addRow("", self.detect_button)
        form.addRow("also train on", self.pairs)
        train_form = QFormLayout()
        train_form.addRow("steps", self.steps_spin)
        train_form.addRow("learning rate", self.lr_spin)
        train_form.addRow("crop size", self.tile_spin)
        train_form.addRow("device", self.device_combo)
        aug_row = QHBoxLayout()
        aug_row.addWidget(self.augment_check, 1)
        aug_row.addWidget(self.preview_button)
        train_form.addRow(aug_row)
        train_form.addRow("input scale", self.scale_combo)
        train_form.addRow("input smoothing", self.smooth_combo)
        train_form.addRow(self.anchor_check)
        train_form.addRow(self.scratch_check)
        train_form.addRow(self.predict_after_check)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.stop_button)
        layout = scroll_body(self)
        layout.addLayout(form)
        layout.addWidget(self.correction)
        layout.addLayout(train_form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.plot)
        layout.addWidget(self.status)
        layout.addWidget(self.versions)
        layout.addStretch(1)
        fit_width(self)

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
        connect_event(self, self.viewer.layers.events.removed, self._on_layer_removed)
        connect_event(self, self.viewer.events.theme,
                      lambda event: self.plot.set_theme(str(event.value)))

    # --- layers --------------------------------------------------------------------
    def _segment_labels_name(self) -> str | None:
        image = self.image_combo.layer() if hasattr(self, "image_combo") else None
        return labels_name(image) if image is not None else None

    def _on_layer_removed(self, event: Any) -> None:
        if self.worker is not None and same_layer(event.value, self._training_labels):
            msg = (f"the Labels layer '{event.value.name}' was deleted; training goes on from "
                   "the copy taken at Start, and no other layer was chosen")
            show_warning(f"Fine-tune: {msg}")
            self.status.setText(msg)

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
        """Build the round's :class:`~napari_unet.training.loop.RoundConfig` from the dock's settings."""
        from ..training.augment import AugmentConfig
        from ..training.denoise import SmoothConfig
        from ..training.loop import RoundConfig
        from ..training.scale import ScaleConfig

        cfg = RoundConfig(start="scratch" if self.scratch_check.isChecked() else "parent",
                          scale=ScaleConfig(mode=self.scale_combo.currentText()),
                          smooth=SmoothConfig(mode=self.smooth_combo.currentText()))
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
        if self.refresh_timer.isActive() or self.scan_worker is not None:
            self.refresh_timer.stop()  # a refresh is due (e.g. Segment just wrote): do it now
            if self.refresh_slices() is not None:
                self.status.setText("still scanning for annotated slices; press Start again")
                return None
        slices = self.slice_list.checked()
        if not slices:
            show_error("Fine-tune: mark at least one slice corrected (or tick one)")
            self.status.setText("nothing to train on: mark the slices you corrected")
            return None
        unmarked = [z for z in slices if z not in set(self.session.corrected(labels))]
        if unmarked and not self.confirm_unmarked(unmarked):
            self.status.setText(f"not started: slice(s) {unmarked} are not marked as corrected")
            return None
        pairs, error = round_pairs(self.session, (image, labels, slices), self.pairs.pairs())
        if error:
            show_error(f"Fine-tune: {error}")
            self.status.setText(f"not started: {error}")
            return None
        stack = spatial_ndim(labels) >= 3
        version, config = self.session.current, self.train_config()
        images, lab, axis = image.data, pairs[0].labels, image_channel_axis(image)
        self.plot.clear()
        self._last_step = None
        self.progress.setMaximum(max(1, config.train.steps))
        self.progress.setValue(0)
        self._set_running(True)
        self._training_labels = labels
        if len(pairs) > 1:
            n = sum(len(p.slices or []) for p in pairs)
            self.status.setText(f"fine-tuning {version.name} on {n} slice(s) of "
                                f"{len(pairs)} images…")
            job = partial(finetune_pairs_iter, version, pairs, config)
        else:
            self.status.setText(f"fine-tuning {version.name} on slices {slices}…")
            job = partial(finetune_iter, version, images, lab, config,
                          slices if stack else None, axis)

        def _done(result: Any) -> None:
            self._on_trained(result, version.name, slices, len(pairs))

        self.worker = start_job(
            job, owner=self, viewer=self.viewer, on_yield=self._on_step, on_return=_done,
            on_finish=self._on_finished, what="Fine-tune", activity=f"Fine-tune {version.name}",
            on_error=lambda msg: self.status.setText(f"fine-tuning failed: {msg}"),
        )
        return self.worker

    def _on_step(self, event: Any) -> None:
        if not isinstance(event, Stage):  # a TrainEvent
            # the corrections' loss, as the round reports it (the plot throttles its redraws)
            self.plot.add(event.step, event.corrections_loss)
            self._last_step = event
        self._throttle.push(event)

    def _show_step(self, event: Any) -> None:
        if isinstance(event, Stage):  # a stage of the round (checks, anchors, self-check)
            self.status.setText(event.message)
            return
        self.progress.setMaximum(int(event.steps))
        self.progress.setValue(int(event.step))
        bar = getattr(self.worker, "activity", None)
        if bar is not None:  # napari's activity dock (a new description re-lays it out)
            bar.set(event.step, event.steps)
        # in the bar, not the status line: a wrapped label's new text re-lays out the
        # whole window (tens of ms each time)
        self.progress.setFormat(event.message)

    def _on_trained(self, result: Any, parent: str, slices: list[int], n_images: int = 1,
                    ) -> None:
        """Add the new version; make it current only when its self-check beat the parent."""
        self._throttle.flush()
        last = getattr(self, "_last_step", None)
        if last is not None:
            self.progress.setMaximum(int(last.steps))
            self.progress.setValue(int(last.step))
        version = self.session.add_model(result.model, parent=parent, select=result.accepted)
        self.plot.set_scores(result.report)
        self.plot.redraw()
        summary, n = result.report.summary(), result.report.n_slices
        what = f"slices {slices}" if n_images == 1 else \
            f"trained on {n} slice(s) of {n_images} images"
        if result.accepted:
            self.status.setText(f"new version: {version.name} (from {parent}, {what}); "
                                f"{summary}")
        else:
            self.status.setText(f"{version.name} ({what}) is NOT better than {parent} on your "
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
        self._training_labels = None
        self._throttle.discard()  # _on_trained showed the last step already
        self._set_running(False)
        if aborted:
            self.status.setText(f"cancelled; still using {self.session.current.name}")

    def _set_running(self, running: bool) -> None:
        self.start_button.setEnabled(not running)
        self.stop_button.setEnabled(running)
        if not running:
            self.progress.setFormat("%p%")
