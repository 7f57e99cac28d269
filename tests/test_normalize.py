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
