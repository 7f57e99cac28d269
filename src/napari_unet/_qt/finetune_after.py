"""What the Fine-tune dock does besides training: segment after a round, augmentation preview."""

from __future__ import annotations

from typing import Any

import numpy as np
from napari.utils.notifications import show_error

from ..inference.predict_config import PredictConfig
from ..inference.segment_job import SegmentRequest, segment_iter
from ..training.finetune_jobs import preview_iter
from .jobs import start_job
from .layers import current_slice, image_channel_axis, spatial_ndim
from .segment_layers import PREVIEW_SUFFIX, apply_segmentation, corrected_among, labels_name


class AfterTrainingMixin:
    """``predict_current_slice`` and ``preview_augmentation`` of the Fine-tune dock.

    The dock provides ``viewer``, ``session``, ``image_combo``, ``labels_combo``,
    ``device_combo``, ``status``, ``predict_worker`` and
    ``preview_worker``.
    """

    # --- after training ------------------------------------------------------------
    def predict_current_slice(self) -> Any:
        """Segment the current slice with the current version; returns the worker.

        A corrected slice is never overwritten: its new segmentation goes into the Labels
        layer ``"<image> preview"`` (drawn as contours over the corrections) instead.
        """
        image = self.image_combo.layer()
        if image is None or self.predict_worker is not None:
            return None
        stack = spatial_ndim(image) >= 3
        z = current_slice(self.viewer, image)
        target = labels_name(image)
        labels = self.viewer.layers[target] if target in self.viewer.layers else None
        aside = corrected_among(labels, [z])
        req = SegmentRequest(image=image.data, channel_axis=image_channel_axis(image),
                             slices=[z] if stack else None,
                             predict=PredictConfig(device=self.device_combo.currentText(),
                                                   tta=False, uncertainty=True))
        version = self.session.current

        def _done(out: Any) -> None:
            if image in self.viewer.layers:
                try:
                    apply_segmentation(self.viewer, image, out, preview=aside)
                except ValueError as err:
                    show_error(f"Segment: {err}")
                    return
                if aside:
                    self.status.setText(
                        f"{self.status.text()} Slice {z} is marked as corrected, so the new "
                        f"segmentation went into the layer '{image.name} {PREVIEW_SUFFIX}'; "
                        "your correction is untouched.")

        def _finished() -> None:
            self.predict_worker = None

        self.predict_worker = start_job(
            lambda: segment_iter(version, req), owner=self, viewer=self.viewer,
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
