"""Direct tests of input normalisation (napari_unet.normalize)."""

import numpy as np
import pytest

from napari_unet.normalize import Normalization


def test_percentiles_map_to_zero_and_one_per_channel():
    rng = np.random.default_rng(0)
    image = np.stack([rng.uniform(0, 10, (64, 64)), rng.uniform(100, 5000, (64, 64))])
    out = Normalization(low=1, high=99)(image, channel_axis=0)
    assert out.dtype == np.float32 and out.shape == image.shape
    for c in range(2):
        assert np.percentile(out[c], 1) == pytest.approx(0, abs=1e-4)
        assert np.percentile(out[c], 99) == pytest.approx(1, abs=1e-4)


def test_minmax_fixed_none_and_invert():
    image = np.array([[2.0, 4.0], [6.0, 10.0]])
    np.testing.assert_allclose(Normalization(mode="minmax")(image), (image - 2) / 8)
    np.testing.assert_allclose(Normalization(mode="fixed", offset=2, scale=4)(image), (image - 2) / 4)
    np.testing.assert_allclose(Normalization(mode="none")(image), image)
    np.testing.assert_allclose(Normalization(mode="minmax", invert=True)(image), 1 - (image - 2) / 8)
    np.testing.assert_allclose(Normalization(mode="none", invert=True)(image), -image)


def test_a_flat_image_does_not_divide_by_zero_and_the_input_is_kept():
    image = np.full((8, 8), 7, np.uint16)
    out = Normalization()(image)
    assert np.isfinite(out).all() and image[0, 0] == 7


def test_from_dict_ignores_unknown_keys_and_an_unknown_mode_is_refused():
    norm = Normalization.from_dict({"mode": "minmax", "invert": True, "future_key": 1})
    assert norm == Normalization(mode="minmax", invert=True)
    with pytest.raises(ValueError, match="unknown normalisation mode"):
        Normalization(mode="zscore")(np.ones((2, 2)))


def test_a_range_floor_stretches_a_narrow_image_less():
    rng = np.random.default_rng(0)
    noise = rng.normal(8, 1.5, (64, 64))  # background only: a few gray levels
    norm = Normalization()
    alone = norm(noise)
    floored = norm(noise, min_range=40.0)
    assert np.percentile(alone, 99.8) == pytest.approx(1, abs=1e-3)
    assert np.percentile(floored, 99.8) < 0.25  # kept at its contrast relative to 40
    wide = rng.uniform(0, 200, (64, 64))
    np.testing.assert_allclose(norm(wide, min_range=40.0), norm(wide))  # wider: unchanged


def test_stack_range_floor_is_a_share_of_the_median_range_per_channel():
    from napari_unet.normalize import stack_range_floor

    rng = np.random.default_rng(1)
    slices = [np.stack([rng.uniform(0, r, (32, 32)), rng.uniform(0, 10 * r, (32, 32))])
              for r in (100.0, 120.0, 5.0)]
    norm = Normalization(mode="minmax")
    floor = stack_range_floor(norm, slices, 0.25)
    ranges = np.array([norm.value_range(s, channel_axis=0) for s in slices])
    np.testing.assert_allclose(floor, 0.25 * np.median(ranges, axis=0), rtol=1e-6)
    assert floor.shape == (2,) and floor[1] > 5 * floor[0]
    assert not stack_range_floor(norm, slices[:1], 0.25).any()  # one slice: off
    assert not stack_range_floor(Normalization(mode="fixed"), slices, 0.25).any()
