"""Direct tests of how user arrays are read as slices (napari_unet.inference.inputs)."""

import dask.array as da
import numpy as np
import pytest

from napari_unet.inference.inputs import as_image_view, to_model_channels


def test_a_2d_image_is_one_slice_of_one_channel():
    image = np.arange(12, dtype=np.uint16).reshape(3, 4)
    view = as_image_view(image)
    assert (view.is_stack, view.n_slices, view.yx) == (False, 1, (3, 4))
    s = view.slice(0)
    assert s.shape == (1, 3, 4) and s.dtype == np.float32
    np.testing.assert_array_equal(s[0], image)


def test_a_stack_and_a_channel_axis_become_z_slices_of_c_y_x():
    stack = np.random.default_rng(0).random((5, 3, 8, 9)).astype(np.float32)  # (Z, C, Y, X)
    view = as_image_view(stack, in_channels=3, channel_axis=1)
    assert (view.is_stack, view.n_slices, view.yx) == (True, 5, (8, 9))
    np.testing.assert_array_equal(view.slice(2), stack[2])
    last = np.moveaxis(stack, 1, -1)  # (Z, Y, X, C)
    np.testing.assert_array_equal(as_image_view(last, 3, channel_axis=-1).slice(4), stack[4])


def test_dask_arrays_are_read_slice_by_slice():
    stack = da.from_array(np.arange(2 * 6 * 7, dtype=np.float32).reshape(2, 6, 7), chunks=(1, 6, 7))
    view = as_image_view(stack)
    assert view.n_slices == 2 and view.data is stack
    np.testing.assert_array_equal(view.slice(1), np.asarray(stack[1])[None])


def test_slice_lists_are_checked():
    view = as_image_view(np.zeros((3, 8, 8), np.float32))
    assert view.check_slices(None) == [0, 1, 2]
    assert view.check_slices([np.int64(2), 0]) == [2, 0]
    for bad, message in (([3], "out of range"), ([], "no slices"), ([True], "integers")):
        with pytest.raises(ValueError, match=message):
            view.check_slices(bad)


def test_non_finite_slices_and_empty_images_are_refused():
    image = np.zeros((4, 4), np.float32)
    image[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        as_image_view(image).slice(0)
    with pytest.raises(ValueError):
        as_image_view(np.zeros((0, 4), np.float32))


def test_colour_becomes_gray_for_a_one_channel_model_only():
    rgb = np.zeros((6, 7, 3), np.uint8)
    rgb[..., 1] = 200
    gray, axis = to_model_channels(rgb, 1)
    assert axis is None and gray.shape == (6, 7)
    assert 0 < float(gray.max()) < 200  # luminance: a green weight below one
    same, axis = to_model_channels(rgb, 3)
    assert same.shape == (6, 7, 3) and axis == 2
    first, axis = to_model_channels(rgb, 1, channel=1)
    assert axis is None
    np.testing.assert_array_equal(first, rgb[..., 1])


def test_a_stack_of_rgb_images_is_found_without_a_channel_axis():
    """``(Z, Y, X, 3)`` as a user's RGB stack comes (the CLI refused it: "say which axis")."""
    stack = np.zeros((4, 6, 7, 3), np.uint16)
    stack[..., 0] = 1000 * np.arange(4)[:, None, None]
    gray, axis = to_model_channels(stack, 1)
    assert axis is None and gray.shape == (4, 6, 7)
    assert np.all(np.diff(gray[:, 0, 0]) > 0)  # each slice from its own colours
    same, axis = to_model_channels(stack, 3)
    assert same.shape == stack.shape and axis == 3
    assert as_image_view(gray).n_slices == 4
    zcyx = np.zeros((4, 3, 6, 7), np.uint8)  # channels first: still needs the axis
    out, axis = to_model_channels(zcyx, 1)
    assert out is zcyx and axis is None
