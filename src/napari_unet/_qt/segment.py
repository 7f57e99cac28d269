"""The Segment dock: predict labels for an image layer with the current model version."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from napari.layers import Image
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QWidget,
)

from ..inference.postprocess import PostprocessConfig
from ..inference.predict_config import PredictConfig
from ..inference.segment_job import SegmentOutput, SegmentRequest, next_slice_to_correct, segment_iter
from ..jobs import Stage
from .controls import check_box, spin_box
from .dialogs import ask_overwrite
from .jobs import start_job
from .layers import LayerCombo, current_slice, go_to_slice, image_channel_axis
from .layout import fit_width, scroll_body, status_label
from .mark_undo import MarkFollower
from .segment_layers import (
    PREDICTED_KEY,
    apply_segmentation,
    corrected_among,
    labels_name,
    layer_is_stack,
)
from .session import get_session
from .throttle import Throttle

if TYPE_CHECKING:
    import napari

LOAD_FILE = "Load from file…"
DEVICES = ("auto", "cpu", "cuda", "mps")
SCOPES = ("current slice", "whole stack")


class SegmentWidget(QWidget):
    """Segment an image layer into a Labels layer ``"<image> labels"``.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer (injected by napari).

    Attributes
    ----------
    confirm_overwrite : callable
        ``confirm_overwrite(slices) -> bool``, asked before corrected slices are
        overwritten; replace it to answer without a dialog (tests, scripts).
    worker : GeneratorWorker or None
        The running job.
    """

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session = get_session()
        self.worker: Any = None
        self.last_output: SegmentOutput | None = None
        self.confirm_overwrite: Callable[[Sequence[int]], bool] = lambda s: ask_overwrite(self, s)

        self._make_controls()
        self._note = ""
        self._throttle = Throttle(self._on_progress, parent=self)
        self.mark_follower = MarkFollower(self)
        self._lay_out()
        self._fill_models()
        self._show_device()
        self._update_scope()
        self._add_callbacks()

    def _make_controls(self) -> None:
        """Create the dock's controls (their order is the default Tab order)."""
        self.image_combo = LayerCombo(self.viewer, Image, self)
        self.model_combo = QComboBox(self)
        self.device_combo = QComboBox(self)
        self.device_combo.addItems(DEVICES)
        self.device_label = QLabel(self)
        self.scope_combo = QComboBox(self)
        self.scope_combo.addItems(SCOPES)
        self.tta_check = check_box("test-time augmentation", self, tip="Average over the 8 "
                                   "flips/rotations (slower, often better)")
        self.prob_check = QCheckBox("probability", self)
        self.unc_check = check_box("uncertainty", self, checked=True,
                                   tip="Softmax entropy, or the spread across TTA transforms")
        self.threshold_spin = spin_box(self, 0.01, 0.99, double=True, step=0.05, value=0.5)
        self.seed_spin = spin_box(self, 0.0, 0.99, double=True, step=0.05, special="off",
                                  tip="Split objects that hold several cores above this "
                                      "probability")
        self.watershed_check = QCheckBox("watershed (grow over borders)", self)
        self.fill_check = check_box("fill (cells tile the image, e.g. EM)", self,
                                    tip="Grow the objects over all background: every pixel "
                                        "gets a label but a one-pixel line between neighbours")
        self.min_size_spin = spin_box(self, 0, 100000)
        self.run_button = QPushButton("Segment", self)
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.setEnabled(False)
        self.next_button = QPushButton("Next slice to correct", self)
        self.next_button.setToolTip("Go to the unmarked slice with the highest mean uncertainty")
        self.progress = QProgressBar(self)
        self.status = status_label(self)
        self.color_label = QLabel("colour (RGB) images: converted to gray for 1-channel "
                                  "models", self)
        self.color_label.setWordWrap(True)
        self.color_label.setVisible(False)

    def _lay_out(self) -> None:
        """Put the controls into the scrollable body."""
        form = QFormLayout()
        form.addRow("image", self.image_combo)
        form.addRow("", self.color_label)
        form.addRow("model", self.model_combo)
        device_row = QHBoxLayout()
        device_row.addWidget(self.device_combo)
        device_row.addWidget(self.device_label)
        form.addRow("device", device_row)
        form.addRow("scope", self.scope_combo)
        form.addRow("", self.tta_check)
        outputs = QHBoxLayout()
        outputs.addWidget(self.prob_check)
        outputs.addWidget(self.unc_check)
        form.addRow("also add", outputs)
        form.addRow("threshold", self.threshold_spin)
        form.addRow("min size (px)", self.min_size_spin)
        form.addRow("split at cores >", self.seed_spin)
        form.addRow("", self.watershed_check)
        form.addRow("", self.fill_check)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        layout = scroll_body(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.next_button)
        layout.addWidget(self.status)
        layout.addStretch(1)
        fit_width(self)

    def _add_callbacks(self) -> None:
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.next_button.clicked.connect(self.go_to_next_slice)
        self.model_combo.activated.connect(self._on_model_chosen)
        self.device_combo.currentTextChanged.connect(self._show_device)
        self.image_combo.currentTextChanged.connect(self._update_scope)
        self.session.versions_changed.connect(self._fill_models)
        self.session.current_changed.connect(self._fill_models)

    # --- model list ----------------------------------------------------------------
    def _fill_models(self, *_: Any) -> None:
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        for version in self.session.versions():
            self.model_combo.addItem(version.name)
            tip = f"{version.kind}, added {version.created:%Y-%m-%d %H:%M:%S}"
            if version.parent:
                tip += f", from {version.parent}"
            self.model_combo.setItemData(self.model_combo.count() - 1, tip,
                                         Qt.ItemDataRole.ToolTipRole)
        self.model_combo.addItem(LOAD_FILE)
        self.model_combo.setCurrentText(self.session.current.name)
        self.model_combo.blockSignals(False)
        self._apply_postprocess_defaults()

    def _apply_postprocess_defaults(self) -> None:
        """Show the post-processing the current model was tuned with (the user may change it)."""
        from ..inference.predict import recommended_tta

        try:
            model = self.session.current.get_model()
        except (OSError, ValueError):
            return  # a broken file is reported when it is used
        pp = PostprocessConfig.for_model(model)
        self.tta_check.setChecked(recommended_tta(model))
        self.threshold_spin.setValue(float(pp.threshold))
        self.watershed_check.setChecked(bool(pp.watershed))
        self.fill_check.setChecked(bool(pp.fill))
        self.seed_spin.setValue(float(pp.seed_threshold or 0.0))
        self.min_size_spin.setValue(int(pp.min_size))

    def postprocess(self) -> PostprocessConfig:
        """The post-processing set in the dock (a seed threshold of 0 is none)."""
        return PostprocessConfig(
            threshold=self.threshold_spin.value(), watershed=self.watershed_check.isChecked(),
            min_size=self.min_size_spin.value(), fill=self.fill_check.isChecked(),
            seed_threshold=self.seed_spin.value() or None)

    def _on_model_chosen(self, index: int) -> None:
        name = self.model_combo.itemText(index)
        if name == LOAD_FILE:
            path, _ = QFileDialog.getOpenFileName(self, "Load a U-Net model", "",
                                                  "napari-unet or bioimage.io models (*.pt *.zip);;"
                                                  "All files (*)")
            if path:
                self.load_model_file(path)
            else:
                self._fill_models()
            return
        self.session.set_current(name)

    def load_model_file(self, path: str) -> None:
        """Add a model file to the session's list and select it."""
        self.session.add_file(path)

    # --- options -------------------------------------------------------------------
    def _show_device(self, *_: Any) -> None:
        from ..devices import inference_dtype, precision_name, resolve_device

        try:
            dev = resolve_device(self.device_combo.currentText())
        except ValueError as err:
            self.device_label.setText("unavailable")
            self.device_label.setToolTip(str(err))
            return
        self.device_label.setText(f"using {dev.type}, {precision_name(inference_dtype(dev))}")
        self.device_label.setToolTip(
            "bf16 where the hardware runs it natively (GPUs; CPUs with AMX or AVX-512 BF16)")

    def _update_scope(self, *_: Any) -> None:
        image = self.image_combo.layer()
        stack = image is not None and layer_is_stack(image)
        self.scope_combo.setEnabled(stack)
        self.color_label.setVisible(image is not None and image_channel_axis(image) is not None)

    def _target_slices(self, image: Image) -> list[int] | None:
        if not layer_is_stack(image):
            return None
        if self.scope_combo.currentText() == SCOPES[0]:
            return [current_slice(self.viewer, image)]
        return list(range(int(image.data.shape[0])))

    # --- run -----------------------------------------------------------------------
    def run(self, *_: Any, slices: Sequence[int] | None = None) -> Any:
        """Segment the selected image (current slice or whole stack); returns the worker.

        Parameters
        ----------
        slices : sequence of int, optional
            Slices to segment instead of the scope setting (stacks only).

        Returns
        -------
        GeneratorWorker or None
            The job, or None when nothing was started.
        """
        image = self.image_combo.layer()
        if image is None:
            show_error("Segment: add or choose an image layer first")
            return None
        if self.worker is not None:
            show_info("Segment: a job is already running")
            return None
        targets = list(slices) if slices is not None and layer_is_stack(image) else (
            self._target_slices(image))
        name = labels_name(image)
        labels = self.viewer.layers[name] if name in self.viewer.layers else None
        marked = corrected_among(labels, targets if targets is not None else [0])
        keep: list[int] = []
        overwrite: list[int] = []
        if marked and not self.confirm_overwrite(marked):
            keep = marked
            if targets is None or not set(targets) - set(keep):
                show_info("Segment: every chosen slice is marked as corrected; nothing to do")
                self.status.setText("nothing to do: every chosen slice is marked as corrected "
                                    "(answer Yes to segment them again)")
                return None
            targets = [z for z in targets if z not in keep]
        elif marked:
            overwrite = marked
        req = SegmentRequest(
            image=image.data, channel_axis=image_channel_axis(image), slices=targets,
            predict=PredictConfig(device=self.device_combo.currentText(),
                                  tta=self.tta_check.isChecked(),
                                  uncertainty=self.unc_check.isChecked()),
            postprocess=self.postprocess())
        version = self.session.current
        self._set_running(True)
        self.status.setText(f"segmenting {image.name} with {version.name}…")

        def _done(out: SegmentOutput) -> None:
            self._apply(image, out, keep, overwrite)

        self._note = ""
        self.worker = start_job(
            lambda: segment_iter(version, req), owner=self, viewer=self.viewer,
            on_yield=self._throttle.push, on_return=_done, on_finish=self._on_finished,
            on_error=lambda msg: self.status.setText(f"failed: {msg}"), what="Segment",
            activity=f"Segment {image.name}",
        )
        return self.worker

    def _apply(self, image: Image, out: SegmentOutput, keep: Sequence[int],
               overwrite: Sequence[int] = ()) -> None:
        self.last_output = out
        self._throttle.discard()
        if image not in self.viewer.layers:
            self.status.setText(f"{image.name} was removed during the job; result dropped")
            return
        name = labels_name(image)
        labels = self.viewer.layers[name] if name in self.viewer.layers else None
        overwrite = [z for z in overwrite if z in out.slices]
        if labels is not None and overwrite:
            self.session.overwriting.emit(labels, list(overwrite))  # autosave backs them up
        try:  # the overwritten slices are unmarked; their marks follow Ctrl-Z
            with self.mark_follower.overwrite(labels, overwrite):
                labels = apply_segmentation(self.viewer, image, out, keep=keep,
                                            probability=self.prob_check.isChecked(),
                                            uncertainty=self.unc_check.isChecked())
        except ValueError as err:
            show_error(f"Segment: {err}")
            self.status.setText(f"failed: {err}")
            return
        self.device_label.setText(f"using {out.device}")
        where = f"slice {out.slices[0]}" if out.is_stack and len(out.slices) == 1 else (
            f"{len(out.slices)} slices" if out.is_stack else "the image")
        text = f"segmented {where} on {out.device}"
        if out.note:
            text += f" ({out.note})"
        if labels is not None and overwrite:
            text += (f"; slice(s) {', '.join(map(str, overwrite))} overwritten and unmarked "
                     "(Ctrl-Z in the labels layer brings them back, marked; autosave kept a "
                     "backup)")
        self.status.setText(text)

    def _on_progress(self, event: Any) -> None:
        if isinstance(event, Stage):  # "colour image converted to gray ..." or a stage
            if "converted" in event.message:
                self._note = event.message
                self.status.setText(event.message)
            else:
                self.progress.setFormat(event.message)
            return
        self.progress.setMaximum(max(1, int(event.total)))
        self.progress.setValue(int(event.done))
        bar = getattr(self.worker, "activity", None)
        if bar is not None:  # napari's activity dock
            bar.set(event.done, event.total, f"Segment: slice {event.z}")
        note = f" ({self._note})" if self._note else ""
        # in the bar, not the status line: a wrapped label's new text re-lays out the
        # whole window (tens of ms each time)
        self.progress.setFormat(f"{event.message}{note}")  # a Progress

    def cancel(self, *_: Any) -> None:
        """Stop the running job; the layers keep their last state."""
        if self.worker is not None:
            self.worker.quit()
            self.status.setText("cancelling…")

    def _on_finished(self) -> None:
        aborted = self.worker is not None and self.worker.abort_requested
        self._throttle.discard()
        self.worker = None
        self._set_running(False)
        if aborted:
            self.status.setText("cancelled")

    def _set_running(self, running: bool) -> None:
        self.run_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        if not running:
            self.progress.setValue(self.progress.maximum() if self.progress.value() else 0)
            self.progress.setFormat("%p%")

    # --- review --------------------------------------------------------------------
    def go_to_next_slice(self, *_: Any) -> int | None:
        """Jump to the unmarked slice with the highest mean uncertainty; returns it."""
        image = self.image_combo.layer()
        name = f"{image.name} uncertainty" if image is not None else ""
        if image is None or name not in self.viewer.layers:
            show_info("Next slice: segment with 'uncertainty layer' checked first")
            return None
        unc = self.viewer.layers[name]
        labels_layer = self.viewer.layers[labels_name(image)] \
            if labels_name(image) in self.viewer.layers else None
        corrected = self.session.corrected(labels_layer) if labels_layer is not None else []
        z = next_slice_to_correct(unc.data, unc.metadata.get(PREDICTED_KEY, []), corrected)
        if z is None:
            show_info("Next slice: every predicted slice is marked as corrected")
            return None
        go_to_slice(self.viewer, image, z)
        self.status.setText(f"slice {z} has the highest mean uncertainty")
        return z
