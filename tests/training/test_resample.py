"""Direct tests of the resampling helpers of augmentation (napari_unet.training._resample)."""

import numpy as np

from napari_unet.training._resample import source_coordinates, upsample_field, warp


def test_identity_coordinates_give_the_input_back():
    rng = np.random.default_rng(0)
    image = rng.random((2, 9, 11)).astype(np.float32)
    labels = rng.integers(0, 4, (9, 11))
    weights = rng.random((9, 11)).astype(np.float32)
    ys, xs = source_coordinates((9, 11), np.eye(2), np.zeros(2), None)
    np.testing.assert_allclose(ys, np.broadcast_to(np.arange(9)[:, None], (9, 11)), atol=1e-5)
    np.testing.assert_allclose(xs, np.broadcast_to(np.arange(11)[None], (9, 11)), atol=1e-5)
    out_img, out_lab, out_w = warp(image, labels, weights, ys, xs)
    np.testing.assert_allclose(out_img, image, atol=1e-5)
    np.testing.assert_array_equal(out_lab, labels)
    np.testing.assert_allclose(out_w, weights, atol=1e-5)


def test_a_shift_moves_the_image_and_mirrors_at_the_border():
    image = np.arange(8, dtype=np.float32)[None, None].repeat(4, axis=1)  # (1, 4, 8) ramp in x
    labels = np.zeros((4, 8), np.int64)
    ys, xs = source_coordinates((4, 8), np.eye(2), np.array([0.0, 2.0]), None)
    out, _, _ = warp(image, labels, None, ys, xs)
    np.testing.assert_allclose(out[0, 0, :6], np.arange(2, 8), atol=1e-5)
    assert out[0, 0, 6] == out[0, 0, 4]  # x = 8 mirrors about the last pixel to x = 6


def test_upsampled_field_interpolates_the_grid_nodes():
    nodes = np.full((2, 3, 3), 1.5, np.float32)
    field = upsample_field(nodes, (20, 30))
    assert field.shape == (2, 20, 30)
    np.testing.assert_allclose(field, 1.5, atol=1e-4)  # a constant grid stays constant
    ramp = np.stack([np.tile(np.arange(3, dtype=np.float32), (3, 1))] * 2)  # linear in x
    f = upsample_field(ramp, (5, 9))
    assert np.all(np.diff(f[0, 2]) > 0)  # monotone like its nodes
    np.testing.assert_allclose(f[0, :, 0], f[0, 0, 0], atol=1e-5)  # constant along y
