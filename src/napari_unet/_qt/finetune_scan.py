"""Annotated-slice detection of the Fine-tune dock, off the GUI thread for large stacks."""

from __future__ import annotations

from typing import Any

import numpy as np
from napari.layers import Labels

from ..training.finetune_jobs import annotated_iter
from .jobs import start_job
from .layers import same_layer, spatial_ndim

SYNC_SCAN_BYTES = 64 * 2**20  # larger label stacks are scanned for annotations in a worker


class SliceScanMixin:
    """``refresh_slices`` for a dock with ``labels_combo``, ``slice_list`` and ``session``."""

    scan_worker: Any = None
    _rescan: bool = False

    def refresh_slices(self, *_: Any) -> Any:
        """Re-detect the annotated slices (any nonzero label) and show the marks.

        Stacks over :data:`SYNC_SCAN_BYTES` are scanned in a worker (returned); a refresh
        asked for during a scan runs when it ends.
        """
        from ..training.train import annotated_slices

        labels = self.labels_combo.layer()
        if labels is None:
            self.slice_list.clear()
            return None
        if getattr(labels.data, "nbytes", 0) <= SYNC_SCAN_BYTES:
            self._show_slices(labels, annotated_slices(np.asarray(labels.data)))
            return None
        if self.scan_worker is not None:
            self._rescan = True
            return self.scan_worker
        data = labels.data
        self.scan_worker = start_job(
            lambda: annotated_iter(data), owner=self,
            on_return=lambda found: self._show_slices(labels, found),
            on_finish=self._on_scan_finished, what="Fine-tune",
        )
        return self.scan_worker

    def _show_slices(self, labels: Labels, annotated: list[int]) -> None:
        if same_layer(labels, self.labels_combo.layer()):
            self.slice_list.fill(annotated, self.session.corrected(labels),
                                 stack=spatial_ndim(labels) >= 3)

    def _on_scan_finished(self) -> None:
        self.scan_worker = None
        if self._rescan:
            self._rescan = False
            self.refresh_slices()

