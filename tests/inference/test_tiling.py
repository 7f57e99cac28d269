"""Direct tests of the overlap-tile geometry (napari_unet.inference.tiling)."""

import numpy as np
import pytest

from napari_unet.inference.tiling import (
    choose_tile,
    crop_offset,
    memory_per_tile,
    pad_image,
    plan_axis,
    useful_output,
)
from napari_unet.model import UNet


@pytest.fixture(scope="module")
def net():
    return UNet(base_channels=4, depth=3, normalization={"mode": "none"})


@pytest.mark.parametrize("length", [1, 7, 40, 97, 300])
@pytest.mark.parametrize("in_tile", [60, 124])
def test_a_plan_covers_the_axis_once_with_strided_origins(net, length, in_tile):
    plan = plan_axis(net, length, in_tile)
    assert plan.in_tile == net.valid_input_size(plan.in_tile)
    assert all(s % net.stride == 0 for s in plan.starts)
    kept = [plan.keep(i) for i in range(len(plan.starts))]
    assert kept[0][0] == 0 and kept[-1][1] == length
    assert all(a[1] == b[0] for a, b in zip(kept, kept[1:]))  # no gap, no overlap
    assert all(b - a <= plan.out_tile for a, b in kept)
    # every input tile lies inside the padded axis
    assert plan.starts[-1] + plan.in_tile <= plan.pad_before + length + plan.pad_after


def test_an_empty_axis_is_refused(net):
    with pytest.raises(ValueError, match="empty"):
        plan_axis(net, 0, 60)


def test_pad_image_mirrors_the_border(net):
    image = np.arange(30, dtype=np.float32).reshape(5, 6)
    plans = (plan_axis(net, 5, 60), plan_axis(net, 6, 60))
    padded = pad_image(image, plans)
    b0, b1 = plans[0].pad_before, plans[1].pad_before
    assert padded.shape == (5 + b0 + plans[0].pad_after, 6 + b1 + plans[1].pad_after)
    np.testing.assert_array_equal(padded[b0 : b0 + 5, b1 : b1 + 6], image)
    assert padded[b0 - 1, b1] == image[1, 0]  # reflected about the first row
    zeros = pad_image(image, plans, mode="constant")
    assert zeros[0, 0] == 0 and zeros.sum() == image.sum()
    with pytest.raises(ValueError, match="padding mode"):
        pad_image(image, plans, mode="wrap")


def test_same_padding_keeps_the_halo_as_crop_offset():
    same = UNet(base_channels=4, depth=3, padding="same", normalization={"mode": "none"})
    valid = UNet(base_channels=4, depth=3, normalization={"mode": "none"})
    assert crop_offset(valid) == 0 and crop_offset(same) == same.halo
    assert useful_output(same, 124) == 124 - 2 * same.halo
    assert useful_output(valid, 124) == valid.output_size(124)


def test_the_chosen_tile_grows_with_the_budget_and_respects_the_cap(net):
    small = choose_tile(net, (2000, 2000), memory_per_tile(net, 124))
    big = choose_tile(net, (2000, 2000), 100 * memory_per_tile(net, 124))
    assert small <= 124 < big
    assert memory_per_tile(net, big) <= 100 * memory_per_tile(net, 124)
    assert choose_tile(net, (2000, 2000), 2**40, max_tile=300) <= 300
    assert choose_tile(net, (30, 30), 2**40) == net.valid_input_size(30 + 2 * net.halo)
