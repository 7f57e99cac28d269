"""Tests for napari_unet.training.augment (pure NumPy/torch, no Qt)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_unet.training.augment import (
    AugmentConfig,
    augment_sample,
    displacement_field,
    elastic_deform,
)

ELASTIC_ONLY = AugmentConfig(
    flips=False, rotate=False, shift=0.0, intensity=False, elastic=True, sigma=10.0
)
NOTHING = AugmentConfig(elastic=False, flips=False, rotate=False, shift=0.0, intensity=False)


def _sample(shape=(48, 64), channels=None, seed=0):
    rng = np.random.default_rng(seed)
    full = shape if channels is None else (channels, *shape)
    image = rng.random(full, dtype=np.float32)
    labels = np.zeros(shape, np.int32)
    labels[8:20, 10:30] = 3
    labels[25:40, 35:60] = 7
    weights = rng.random(shape).astype(np.float32) + 1.0
    return image, labels, weights


def _ramp(n):
    yy, xx = np.mgrid[:n, :n].astype(np.float32)
    return np.stack([yy, xx])


def _recovered_field(n, seeds, sigma=10.0, grid=3):
    """Warp a coordinate ramp with elastic only; return displacements at the grid nodes."""
    ramp = _ramp(n)
    nodes = np.round(np.linspace(0, n - 1, grid)).astype(int)
    labels = np.zeros((n, n), np.uint8)
    out = []
    for seed in seeds:
        warped, _, _ = elastic_deform(ramp, labels, grid=grid, sigma=sigma, rng=seed)
        disp = warped - ramp  # (2, n, n), exact for |d| small enough (no mirroring)
        out.append(disp[:, nodes[:, None], nodes[None, :]])
    return np.stack(out), nodes  # (seeds, 2, grid, grid)


def test_bicubic_field_matches_torch_interpolate():
    field = displacement_field((65, 41), grid=3, sigma=10.0, rng=5)
    nodes = np.random.default_rng(5).normal(0.0, 10.0, (2, 3, 3)).astype(np.float32)
    ref = F.interpolate(
        torch.from_numpy(nodes)[None], size=(65, 41), mode="bicubic", align_corners=True
    )[0].numpy()
    np.testing.assert_allclose(field, ref, atol=1e-4)
    np.testing.assert_allclose(field[:, ::32, ::20], nodes, atol=1e-4)  # interpolating


def test_recovered_displacement_std_is_sigma():
    # centre node: never mirrored on a 129 px image (6 sigma away from the border)
    disp, _ = _recovered_field(129, range(300))
    centre = disp[:, :, 1, 1]
    assert abs(centre.mean()) < 1.5
    assert centre.std() == pytest.approx(10.0, rel=0.1)
    # all nodes: mirroring only flips the sign at border nodes, so the RMS is still sigma
    assert np.sqrt((disp**2).mean()) == pytest.approx(10.0, rel=0.1)
    # y and x displacements are independent
    assert abs(np.corrcoef(centre[:, 0], centre[:, 1])[0, 1]) < 0.2


def test_sigma_scales_field():
    small, _ = _recovered_field(65, range(40), sigma=2.0)
    assert np.sqrt((small**2).mean()) == pytest.approx(2.0, rel=0.25)
    zero, _ = _recovered_field(33, range(2), sigma=0.0)
    np.testing.assert_allclose(zero, 0.0, atol=1e-4)


def test_augment_elastic_only_same_field_as_elastic_deform():
    ramp = _ramp(65)
    labels = np.zeros((65, 65), np.int16)
    a, _, _ = augment_sample(ramp, labels, config=ELASTIC_ONLY, rng=3)
    b, _, _ = elastic_deform(ramp, labels, rng=3)
    np.testing.assert_allclose(a, b, atol=1e-3)
    assert not np.allclose(a, ramp, atol=0.5)


def test_labels_keep_only_original_values():
    image, labels, weights = _sample()
    for seed in range(5):
        _, lab, _ = augment_sample(image, labels, weights, rng=seed)
        assert set(np.unique(lab)) <= {0, 3, 7}
        assert lab.dtype == labels.dtype
        _, lab, _ = elastic_deform(image, labels, weights, sigma=20.0, rng=seed)
        assert set(np.unique(lab)) <= {0, 3, 7}


def test_labels_follow_image_coordinates():
    # labels = flat pixel index, image = coordinate ramp: nearest must sit within 0.5 px
    n = 60
    ramp = _ramp(n)
    index = np.arange(n * n, dtype=np.int64).reshape(n, n)
    cfg = AugmentConfig(intensity=False, shift=20.0, max_angle=30.0)
    for seed in range(4):
        img, lab, _ = augment_sample(ramp, index, config=cfg, rng=seed)
        got = np.stack(np.divmod(lab, n)).astype(np.float32)
        assert np.abs(got - img).max() <= 0.5 + 1e-3
        assert img.min() >= -1e-4 and img.max() <= n - 1 + 1e-4  # mirrored, in range


def test_no_empty_corners():
    ones = np.ones((40, 40), np.float32)
    labels = np.ones((40, 40), np.int32)
    cfg = AugmentConfig(intensity=False, shift=30.0, max_angle=45.0, sigma=25.0)
    for seed in range(4):
        img, lab, w = augment_sample(ones, labels, ones, config=cfg, rng=seed)
        np.testing.assert_allclose(img, 1.0, atol=1e-5)
        np.testing.assert_allclose(w, 1.0, atol=1e-5)
        assert (lab == 1).all()


@pytest.mark.parametrize("shape", [(48, 64), (33, 33), (1, 10), (10, 1)])
@pytest.mark.parametrize("channels", [None, 3])
def test_shapes_preserved(shape, channels):
    image, _, _ = _sample((48, 64), channels)
    image = image[..., : shape[0], : shape[1]]
    labels = np.zeros(shape, np.uint16)
    weights = np.ones(shape, np.float64)
    for fn in (augment_sample, lambda *a, rng: elastic_deform(*a, rng=rng)):
        img, lab, w = fn(image, labels, weights, rng=1)
        assert img.shape == image.shape and img.dtype == np.float32
        assert lab.shape == shape and lab.dtype == np.uint16
        assert w.shape == shape and w.dtype == np.float64
        assert np.isfinite(img).all()


def test_channels_warped_identically():
    image, labels, weights = _sample(channels=2)
    image[1] = image[0] * 2.0
    img, _, _ = augment_sample(image, labels, weights, config=ELASTIC_ONLY, rng=4)
    np.testing.assert_allclose(img[1], 2.0 * img[0], rtol=1e-5, atol=1e-6)
    single, _, _ = augment_sample(image[0], labels, weights, config=ELASTIC_ONLY, rng=4)
    np.testing.assert_allclose(img[0], single, atol=1e-6)


def test_deterministic_per_seed():
    image, labels, weights = _sample()
    a = augment_sample(image, labels, weights, rng=11)
    b = augment_sample(image, labels, weights, rng=np.random.default_rng(11))
    c = augment_sample(image, labels, weights, rng=12)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])
    assert not np.array_equal(a[2], c[2])
    d = elastic_deform(image, labels, weights, rng=11)
    e = elastic_deform(image, labels, weights, rng=11)
    f = elastic_deform(image, labels, weights, rng=12)
    np.testing.assert_array_equal(d[0], e[0])
    assert not np.array_equal(d[0], f[0])


def test_weights_none_passthrough():
    image, labels, _ = _sample()
    assert elastic_deform(image, labels, rng=0)[2] is None
    assert augment_sample(image, labels, rng=0)[2] is None
    assert augment_sample(image, labels, config=AugmentConfig(enabled=False))[2] is None


def test_weights_interpolated_linearly():
    # a linear ramp stays within its range and keeps its mean roughly (no overshoot)
    image, labels, _ = _sample()
    weights = np.tile(np.linspace(1.0, 5.0, 64, dtype=np.float32), (48, 1))
    _, _, w = augment_sample(image, labels, weights, rng=2)
    assert w.min() >= 1.0 - 1e-5 and w.max() <= 5.0 + 1e-5


def test_inputs_not_modified():
    image, labels, weights = _sample(channels=2)
    copies = [image.copy(), labels.copy(), weights.copy()]
    for arr in (image, labels, weights):
        arr.flags.writeable = False  # any in-place write would raise
    augment_sample(image, labels, weights, rng=0)
    augment_sample(image, labels, weights, config=NOTHING, rng=0)
    elastic_deform(image, labels, weights, rng=0)
    for orig, arr in zip(copies, (image, labels, weights)):
        np.testing.assert_array_equal(orig, arr)


def test_disabled_returns_copies():
    image, labels, weights = _sample()
    for cfg in (AugmentConfig(enabled=False), NOTHING):
        img, lab, w = augment_sample(image, labels, weights, config=cfg, rng=0)
        np.testing.assert_array_equal(img, image)
        np.testing.assert_array_equal(lab, labels)
        np.testing.assert_array_equal(w, weights)
        assert not np.shares_memory(img, image) and not np.shares_memory(lab, labels)
        assert not np.shares_memory(w, weights)


@pytest.mark.parametrize(
    "switch",
    [
        {"elastic": True},
        {"flips": True},
        {"rotate": True, "rot90": False},
        {"rotate": True, "max_angle": 0.0},
        {"shift": 10.0},
    ],
)
def test_each_spatial_switch_alone(switch):
    n = 32
    ramp = _ramp(n)
    labels = np.zeros((n, n), np.int32)
    cfg = AugmentConfig(**{**NOTHING.to_dict(), **switch})
    changed = 0
    for seed in range(6):
        img, _, _ = augment_sample(ramp, labels, config=cfg, rng=seed)
        changed += not np.allclose(img, ramp, atol=1e-3)
        if "rotate" in switch and switch.get("max_angle") == 0.0:  # 90° steps only: exact
            assert any(np.allclose(img[0], np.rot90(ramp[0], k), atol=1e-3) for k in range(4))
    assert changed >= 3


def test_flips_are_exact_and_keep_other_draws():
    image, labels, weights = _sample(shape=(40, 40))
    cfg = AugmentConfig(**{**NOTHING.to_dict(), "flips": True})
    seen = set()
    for seed in range(12):
        img, lab, _ = augment_sample(image, labels, weights, config=cfg, rng=seed)
        for name, ref in {
            "id": image,
            "y": image[::-1],
            "x": image[:, ::-1],
            "yx": image[::-1, ::-1],
        }.items():
            if np.allclose(img, ref, atol=1e-5):
                seen.add(name)
    assert seen == {"id", "y", "x", "yx"}


def test_intensity_switches():
    image, labels, weights = _sample()
    base = AugmentConfig(**{**NOTHING.to_dict(), "intensity": True})
    off = {"gamma": None, "contrast": None, "brightness": None}
    for name in ("gamma", "contrast", "brightness"):
        cfg = AugmentConfig(**{**base.to_dict(), **off, name: base.to_dict()[name]})
        img, lab, w = augment_sample(image, labels, weights, config=cfg, rng=1)
        assert not np.allclose(img, image, atol=1e-4), name
        np.testing.assert_array_equal(lab, labels)  # image only
        np.testing.assert_array_equal(w, weights)
    cfg = AugmentConfig(**{**base.to_dict(), **off})
    np.testing.assert_array_equal(augment_sample(image, labels, config=cfg, rng=1)[0], image)
    # brightness adds a constant; contrast keeps the mean
    cfg = AugmentConfig(**{**base.to_dict(), **off, "brightness": (0.2, 0.2)})
    np.testing.assert_allclose(augment_sample(image, labels, config=cfg)[0], image + 0.2, atol=1e-6)
    cfg = AugmentConfig(**{**base.to_dict(), **off, "contrast": (0.5, 0.5)})
    img = augment_sample(image, labels, config=cfg)[0]
    assert img.mean() == pytest.approx(image.mean(), abs=1e-5)
    assert img.std() == pytest.approx(0.5 * image.std(), rel=1e-4)
    cfg = AugmentConfig(**{**base.to_dict(), **off, "gamma": (2.0, 2.0)})
    np.testing.assert_allclose(augment_sample(image, labels, config=cfg)[0], image**2, rtol=1e-5)


def test_integer_image_and_config_roundtrip():
    image = np.arange(48 * 64, dtype=np.uint16).reshape(48, 64) % 251
    _, labels, _ = _sample()
    img, _, _ = augment_sample(image, labels, config=ELASTIC_ONLY, rng=0)
    assert img.dtype == np.float32 and 0 <= img.min() and img.max() <= 250
    cfg = AugmentConfig(sigma=5.0, gamma=[0.8, 1.2], shift=3.0)
    assert AugmentConfig.from_dict({**cfg.to_dict(), "unknown": 1}) == cfg
    with pytest.raises(ValueError):
        AugmentConfig(contrast=(1.5, 0.5))
    with pytest.raises(ValueError):
        augment_sample(image, labels[:10])


def test_bicubic_image_order():
    # torch's cubic (a = -0.75) nearly reproduces linear ramps: order 3 ~ order 1 inside
    ramp = _ramp(64)
    weights = np.ones((64, 64), np.float32)
    labels = np.zeros((64, 64), np.int32)
    cfg1 = AugmentConfig(intensity=False, shift=4.0, max_angle=10.0, sigma=3.0)
    cfg3 = AugmentConfig(**{**cfg1.to_dict(), "image_order": 3})
    a, _, _ = augment_sample(ramp, labels, weights, config=cfg1, rng=9)
    b, _, w = augment_sample(ramp, labels, weights, config=cfg3, rng=9)
    inner = (slice(None), slice(16, -16), slice(16, -16))
    np.testing.assert_allclose(a[inner], b[inner], atol=0.1)
    assert not np.allclose(a[inner], b[inner], atol=1e-4)  # really bicubic
    np.testing.assert_allclose(w, 1.0, atol=1e-6)
    assert not np.allclose(a[inner], ramp[inner], atol=0.5)
