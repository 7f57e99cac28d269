"""Seed-threshold recalibration of fine-tuned models on uncorrected slices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_unet.calibrate import (
    THRESHOLDS,
    agreement_threshold,
    pick_slices,
    recalibrate,
    recalibrate_iter,
    uncorrected_slices,
)
from napari_unet.model import UNet
from napari_unet.postprocess import labels_from_probabilities


def _two_cells(gap: float) -> np.ndarray:
    """Two cells whose separating membrane has a gap of probability ``gap``."""
    p = np.full((40, 60), 0.95, np.float32)
    p[:, 28:32] = 0.05
    p[18:22, 28:32] = gap
    return np.stack([1 - p, p])


def test_agreement_threshold_prefers_the_threshold_that_keeps_cells_apart():
    reference = labels_from_probabilities(_two_cells(0.05), threshold=0.5)  # two seeds
    assert reference.max() == 2
    best, scores = agreement_threshold([_two_cells(0.75)], [reference], {"fill": True})
    # below 0.75 the gap merges the cells; above it they stay apart, as in the reference
    assert best > 0.75 and scores[0.5] > 0.1 and scores[best] < 1e-9
    assert set(scores) == set(THRESHOLDS)
    with pytest.raises(ValueError, match="reference"):
        agreement_threshold([_two_cells(0.5)], [], {"fill": True})


def test_pick_slices_spreads_over_the_uncorrected_ones():
    assert pick_slices(10, [4, 5]) == [0, 6, 9]
    stack = np.arange(10)[:, None, None] * np.ones((10, 4, 5))
    assert [int(s[0, 0]) for s in uncorrected_slices(stack, [4, 5])] == [0, 6, 9]
    assert pick_slices(3, [1]) == [0, 2]
    assert pick_slices(2, [0, 1]) == []


def test_recalibrate_only_touches_filling_models():
    torch.manual_seed(0)
    prev, new = UNet(base_channels=4, depth=2), UNet(base_channels=4, depth=2)
    img = [np.random.default_rng(0).random((40, 40)).astype(np.float32)]
    assert recalibrate(new, prev, img, device="cpu") == {}  # no fill: unchanged
    assert "postprocess" not in new.record
    new.record["postprocess"] = {"threshold": 0.3, "fill": True, "min_size": 3}
    assert recalibrate(new, prev, [], device="cpu") == {}  # no uncorrected slice
    out = recalibrate(new, prev, img, device="cpu", precision="fp32")
    assert out["previous_threshold"] == 0.3 and out["threshold"] in THRESHOLDS
    assert new.record["postprocess"]["threshold"] == out["threshold"]
    assert new.record["postprocess"]["fill"] is True and new.record["postprocess"]["min_size"] == 3


def test_recalibrate_iter_reports_each_slice_and_can_be_stopped():
    torch.manual_seed(0)
    prev, new = UNet(base_channels=4, depth=2), UNet(base_channels=4, depth=2)
    new.record["postprocess"] = {"threshold": 0.3, "fill": True}
    imgs = [np.random.default_rng(i).random((40, 40)).astype(np.float32) for i in range(2)]
    gen = recalibrate_iter(new, prev, imgs, device="cpu")
    assert next(gen) == "recalibrating the seed threshold: slice 1/2"
    gen.close()  # cancelled: the model keeps its threshold
    assert new.record["postprocess"]["threshold"] == 0.3
    events = list(recalibrate_iter(new, prev, imgs, device="cpu"))
    assert len(events) == 2 and new.record["postprocess"]["threshold"] in THRESHOLDS
