"""The model's input scale (napari_unet.inference.rescale): resampling, object size, prediction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_unet.inference.predict import predict
from napari_unet.inference.rescale import (
    input_scale,
    is_unit,
    object_diameter,
    resample,
    resample_labels,
    scale_box,
    scaled_shape,
)
from napari_unet.model import UNet, UNetConfig
from napari_unet.model_files import load_model, save_model


def _disks(radius: int, n: int = 6, size: int = 200, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    lab = np.zeros((size, size), np.int32)
    for i in range(1, n + 1):
        cy, cx = rng.integers(radius + 2, size - radius - 2, 2)
        lab[((yy - cy) ** 2 + (xx - cx) ** 2 < radius**2) & (lab == 0)] = i
    return lab


def test_resample_keeps_constants_and_shapes():
    a = np.full((2, 30, 40), 3.0, np.float32)
    out = resample(a, (60, 80))
    assert out.shape == (2, 60, 80) and np.allclose(out, 3.0)
    assert resample(a[0], (15, 20)).shape == (15, 20)
    assert scaled_shape((30, 40), 0.5) == (15, 20) and scaled_shape((1, 1), 0.1) == (1, 1)


def test_resample_labels_is_nearest_and_keeps_the_values():
    lab = np.array([[0, 1], [2, 3]], np.uint16)
    up = resample_labels(lab, (4, 4))
    assert up.dtype == lab.dtype and set(np.unique(up)) == {0, 1, 2, 3}
    assert (up[:2, :2] == 0).all() and (up[2:, 2:] == 3).all()
    assert (resample_labels(up, (2, 2)) == lab).all()


def test_scale_box_covers_the_resampled_block():
    box = (slice(10, 30), slice(0, 25))
    assert scale_box(box, 2.0, (100, 100)) == (slice(20, 60), slice(0, 50))
    assert scale_box(box, 0.5, (25, 25)) == (slice(5, 15), slice(0, 13))


def test_object_diameter_measures_disks_and_leaves_out_cut_ones():
    d = object_diameter([_disks(10)])
    assert d == pytest.approx(20, rel=0.1)
    lab = _disks(10)
    lab[:5, :5] = 99  # a small object cut by the border
    assert object_diameter([lab]) == pytest.approx(d)
    assert object_diameter([np.zeros((10, 10), np.int32)]) is None


def test_a_scaled_model_predicts_the_resampled_image_on_the_input_grid():
    torch.manual_seed(0)
    plain = UNet(depth=2, base_channels=4, normalization={"mode": "none"})
    half = UNet(plain.config, input_scale=0.5)
    half.load_state_dict(plain.state_dict())
    img = np.random.default_rng(0).random((64, 80)).astype(np.float32)
    got = predict(half, img, device="cpu", precision="fp32", tta=False)
    small = predict(plain, resample(img, (32, 40)), device="cpu", precision="fp32", tta=False)
    assert got.shape == (2, 64, 80)
    np.testing.assert_allclose(got, resample(small, (64, 80)), atol=1e-5)
    assert input_scale(half) == 0.5 and input_scale(plain) == 1.0 and is_unit(1.02)


def test_input_scale_is_validated_and_saved(tmp_path):
    with pytest.raises(ValueError, match="input_scale"):
        UNetConfig(input_scale=0)
    assert UNetConfig.from_dict({"depth": 2}).input_scale == 1.0  # old files
    m = UNet(depth=2, base_channels=4, input_scale=2.0)
    save_model(m, tmp_path / "m.pt")
    assert load_model(tmp_path / "m.pt").config.input_scale == 2.0
