"""A round's input scale (napari_unet.training.scale and its use in training.loop)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_unet.inference.rescale import object_diameter
from napari_unet.jobs import run
from napari_unet.model import UNet
from napari_unet.training.loop import RoundConfig, finetune_round
from napari_unet.training.scale import ScaleConfig, measured_scale, to_scale
from napari_unet.training.train import TrainConfig


def _blobs(radius: int, seed: int = 0, size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    lab = np.zeros((size, size), np.uint16)
    for i in range(1, 9):
        cy, cx = rng.integers(radius + 2, size - radius - 2, 2)
        lab[((yy - cy) ** 2 + (xx - cx) ** 2 < radius**2) & (lab == 0)] = i
    img = 40 + 120.0 * (lab > 0) + rng.normal(0, 10, lab.shape)
    return np.clip(img, 0, 255).astype(np.uint8), lab


def _model(diameter: float | None) -> UNet:
    torch.manual_seed(0)
    m = UNet(depth=2, base_channels=8)
    m.record.update({"name": "parent"})
    if diameter:
        m.record["object_diameter"] = diameter
    return m


def test_measured_scale_is_the_ratio_of_object_sizes():
    _, lab = _blobs(12)
    d = object_diameter([lab])
    assert measured_scale(_model(d / 2), [lab], ScaleConfig()) == pytest.approx(0.5, abs=0.01)
    assert measured_scale(_model(d * 1.1), [lab], ScaleConfig()) is None  # within min_ratio
    assert measured_scale(_model(None), [lab], ScaleConfig()) is None  # nothing to compare
    assert measured_scale(_model(d / 2), [lab], ScaleConfig(mode="keep")) is None
    assert measured_scale(_model(None), [lab], ScaleConfig(mode="2")) == 2.0
    with pytest.raises(ValueError, match="scale must be"):
        ScaleConfig(mode="big")


def test_to_scale_resamples_images_labels_boxes_and_anchors():
    img, lab = _blobs(6, size=64)
    box = (slice(0, 32), slice(32, 64))
    imgs, labs, boxes, anchors = to_scale(2.0, [img[None].astype(np.float32)], [lab], {0: box},
                                          [img])
    assert imgs[0].shape == (1, 128, 128) and labs[0].shape == (128, 128)
    assert boxes[0] == (slice(0, 64), slice(64, 128)) and anchors[0].shape == (128, 128)
    same = to_scale(1.0, [img[None]], [lab], {0: box}, None)
    assert same[1][0] is lab and same[3] is None


def test_a_round_on_larger_objects_trains_at_the_measured_scale():
    img, lab = _blobs(12)
    parent = _model(object_diameter([lab]) / 2)
    cfg = RoundConfig(train=TrainConfig(steps=3, lr=1e-3, tile=48, batch_size=2, device="cpu",
                                        amp=False, seed=0), polarity="keep")
    res = run(finetune_round(parent, img, lab, cfg))
    rep = res.report
    assert rep.rescaled and rep.scale == pytest.approx(0.5, abs=0.01)
    assert res.model.config.input_scale == rep.scale and parent.config.input_scale == 1.0
    assert "resampled x0.5" in rep.summary()
    assert res.model.record["object_diameter"] == parent.record["object_diameter"]
    kept = run(finetune_round(parent, img, lab, RoundConfig(train=cfg.train, polarity="keep",
                                                            scale=ScaleConfig(mode="keep"))))
    assert not kept.report.rescaled and kept.model.config.input_scale == 1.0


def test_the_round_prefers_the_measured_scale_then_halfway_then_its_own():
    from napari_unet.training.scale import candidate_scales, pick_scale

    assert candidate_scales(2.0, 1.0) == [2.0, 1.4, 1.0]
    assert candidate_scales(0.5, 0.5) == [0.5]
    cfg = ScaleConfig()
    # F1: higher is better; ties (within 0.05) go to the earlier candidate
    assert pick_scale([(2.0, 0.60), (1.4, 0.62), (1.0, 0.50)], False, cfg) == 2.0
    assert pick_scale([(2.0, 0.50), (1.4, 0.62), (1.0, 0.60)], False, cfg) == 1.4
    assert pick_scale([(2.0, 0.40), (1.4, 0.45), (1.0, 0.60)], False, cfg) == 1.0
    # adapted Rand error: lower is better
    assert pick_scale([(2.0, 0.063), (1.4, 0.047), (1.0, 0.172)], True, cfg) == 1.4


@pytest.mark.parametrize("own, scaled, expect_rescaled", [
    (0.90, 0.88, False),  # a good parent keeps its scale unless clearly beaten
    (0.80, 0.95, True),   # ... and takes one that is clearly better
    (0.30, 0.28, True),   # a poor parent takes the measured scale on a tie
])
def test_which_scale_a_round_takes(monkeypatch, own, scaled, expect_rescaled):
    import napari_unet.training.loop as loop

    img, lab = _blobs(12)
    parent = _model(object_diameter([lab]) / 2)
    calls = iter([own, scaled, scaled])  # own scale, then measured and halfway
    monkeypatch.setattr(loop, "parent_quality", lambda model, probs, labels: next(calls, own))
    cfg = RoundConfig(train=TrainConfig(steps=1, tile=48, batch_size=1, device="cpu",
                                        amp=False), polarity="keep")
    imgs = [img[None].astype(np.float32)]
    model, _, rescaled = run(loop._pick_scale(parent, parent, imgs, [lab], [None], cfg))
    assert rescaled == expect_rescaled
    assert (model.config.input_scale != 1.0) == expect_rescaled
