"""Several (image, labels) pairs: corrected slices, anchors across them, names, errors."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet.training.pairs import ImagePair, gather_pairs, pair_shape_error


class _Counting:
    """An array that counts the slices read from it."""

    def __init__(self, data):
        self.data, self.reads = data, 0
        self.shape, self.dtype, self.ndim = data.shape, data.dtype, data.ndim

    def __getitem__(self, key):
        self.reads += 1
        return self.data[key]


def test_gather_takes_the_corrected_slices_of_every_pair_and_anchors_across_them(blobs):
    img, lab = blobs
    stack = _Counting(np.stack([img] * 6))
    labels = np.stack([lab] + [np.zeros_like(lab)] * 5)
    got = gather_pairs([ImagePair(img, lab, "a.tif", "a_labels.tif"),
                        ImagePair(stack, labels, "b", "b labels", slices=[0, 4])], 1)
    assert got.names == ["a.tif", "b[0]", "b[4]"] and got.n_images == 2
    assert [x.shape for x in got.images] == [(1, 96, 96)] * 3
    assert got.images[0].dtype == np.float32 and len(got.labels) == 3
    np.testing.assert_array_equal(got.labels[2], 0)  # a marked slice may be empty
    assert len(got.anchors) == 3  # of the 4 uncorrected slices of b; only those are read
    assert stack.reads == 2 + 3
    assert got.data_note() == "3 corrected slice(s) of 2 images: a.tif, b[0], b[4]"
    # without slices: every slice holding labels
    got = gather_pairs([ImagePair(stack.data, labels, "b", "b labels")], 1)
    assert got.names == ["b[0]"] and len(got.anchors) == 3
    assert gather_pairs([ImagePair(img, lab, "a", "l")], 1, n_anchors=0).anchors == []
    with pytest.raises(ValueError, match="no corrected slice in any of the 1 labels"):
        gather_pairs([ImagePair(img, lab * 0, "a", "l")], 1)
    with pytest.raises(ValueError, match="no corrected slice"):
        gather_pairs([ImagePair(img, (lab > 0) * 7, "a", "l")], 1, ignore_label=7)
    with pytest.raises(ValueError, match="b labels: slice 6 is out of range for 6"):
        gather_pairs([ImagePair(stack.data, labels, "b", "b labels", slices=[6])], 1)


def test_a_pair_whose_labels_do_not_fit_is_named(blobs):
    img, lab = blobs
    bad = ImagePair(img, lab[:50], "a.tif", "a_labels.tif")
    msg = "a_labels.tif: labels shape (50, 96) differs from a.tif's spatial shape (96, 96)"
    assert pair_shape_error(bad) == msg and pair_shape_error(bad, 1) == msg
    with pytest.raises(ValueError, match="a_labels.tif: labels shape"):
        gather_pairs([ImagePair(img, lab, "ok", "ok"), bad], 1)
    rgb = np.stack([img] * 3, axis=-1)
    assert pair_shape_error(ImagePair(rgb, lab, "c", "l", channel_axis=-1)) is None
    assert pair_shape_error(ImagePair(rgb, lab, "c", "l", channel_axis=2), 3) is None
    # without the model, channels first may be a stack or channels: both shapes pass
    first = np.stack([img] * 3)
    assert pair_shape_error(ImagePair(first, lab, "c", "l")) is None
    assert pair_shape_error(ImagePair(first, lab, "c", "l"), 3) is None
    assert "spatial shape (3, 96, 96)" in pair_shape_error(ImagePair(first, lab, "c", "l"), 1)


def test_a_mask_of_one_value_becomes_its_components(blobs):
    """A 0/255 mask (the ISBI membrane labels, most exported masks) is one object per
    component, in the round's targets and its check alike; instances stay as they are."""
    from napari_unet.training.pairs import as_instances, corrected_pairs

    img, lab = blobs
    mask = np.where(lab > 0, 255, 0).astype(np.uint8)
    _, labs, _ = corrected_pairs([img], [mask], None, None, 1)
    n_touching = len(np.unique(lab)) - 1  # five objects, two of them touching
    assert 2 <= labs[0].max() < n_touching  # components: the touching pair is one
    assert np.array_equal(labs[0] > 0, lab > 0)
    _, same, _ = corrected_pairs([img], [lab], None, None, 1)
    assert same[0] is not None and np.array_equal(same[0], lab)
    diagonal = np.zeros((4, 4), np.uint8)
    diagonal[0, 0] = diagonal[1, 1] = 7
    assert as_instances(diagonal, connectivity=2).max() == 1  # objects: 8-connected
    assert as_instances(diagonal, connectivity=1).max() == 2  # cells: 4-connected
    assert as_instances(diagonal, ignore_label=7) is diagonal  # unannotated: never split
