"""Direct tests of training samples (napari_unet.training.samples)."""

import ast

import numpy as np
import pytest

from napari_unet.model import UNet
from napari_unet.training.border_weights import TargetConfig
from napari_unet.training.samples import annotated_slices, pad_to, prepare_samples, random_crop
from napari_unet.training.train import TrainConfig


@pytest.fixture(scope="module")
def net():
    return UNet(base_channels=4, depth=3, normalization={"mode": "minmax"})


def test_annotated_slices_and_the_ignore_label():
    labels = np.zeros((4, 8, 8), np.uint16)
    labels[1, 2:4, 2:4] = 1
    labels[3] = 7
    assert annotated_slices(labels) == [1, 3]
    assert annotated_slices(labels, ignore_label=7) == [1]
    assert annotated_slices(labels[1]) == [0] and annotated_slices(labels[0]) == []


def test_pad_to_pads_only_what_is_missing():
    a = np.arange(6, dtype=np.float32).reshape(1, 2, 3)
    assert pad_to(a, 2, 3) is a
    b = pad_to(a, 4, 5, "constant")
    assert b.shape == (1, 4, 5) and b[0, 2:].sum() == 0
    np.testing.assert_array_equal(b[:, :2, :3], a)


def test_samples_of_the_annotated_slices_are_padded_by_the_halo(net, blobs):
    image, labels = blobs
    stack, lab = np.stack([image, image, image]), np.stack([labels, 0 * labels, labels])
    samples, zs = prepare_samples(net, stack, lab, TargetConfig())
    assert zs == [0, 2] and len(samples) == 2
    h = net.halo
    s = samples[0]
    assert s.image.shape == (1, 96 + 2 * h, 96 + 2 * h) and s.target.shape == s.weight.shape
    assert 0 <= s.image[0, h:-h, h:-h].min() and s.image.max() <= 1  # minmax-normalised
    fg = s.target[h:-h, h:-h] > 0  # the objects, less the borders between touching ones
    assert np.all(labels[fg] > 0) and fg.sum() > 0.95 * (labels > 0).sum()
    assert s.weight[:h].sum() == 0 and s.weight[h:-h, h:-h].min() > 0  # zero outside the image


def test_an_excluded_box_gets_no_weight_and_bad_input_is_refused(net, blobs):
    image, labels = blobs
    box = (slice(0, 40), slice(0, 40))
    (s,), _ = prepare_samples(net, image, labels, TargetConfig(), exclude={0: box})
    h = net.halo
    assert s.weight[h : h + 40, h : h + 40].sum() == 0
    assert s.weight[h + 50 : h + 96, h + 50 : h + 96].min() > 0
    with pytest.raises(ValueError, match="shape"):
        prepare_samples(net, image, labels[:10], TargetConfig())
    with pytest.raises(ValueError, match="no annotated slice"):
        prepare_samples(net, image, 0 * labels, TargetConfig())
    with pytest.raises(ValueError, match="one class"):
        prepare_samples(net, image, np.ones_like(labels), TargetConfig())


def test_a_random_crop_has_the_size_asked_and_holds_annotation(net, blobs):
    image, labels = blobs
    (s,), _ = prepare_samples(net, image, labels, TargetConfig())
    rng = np.random.default_rng(0)
    for size in (60, 400):  # inside the sample, and larger than it (padded)
        img, tgt, wgt = random_crop(s, size, rng)
        assert img.shape == (1, size, size) and tgt.shape == wgt.shape == (size, size)
        assert wgt.any()


def test_object_crops_hold_an_object_even_on_a_nearly_empty_slice(net):
    image = np.zeros((200, 200), np.float32)
    labels = np.zeros((200, 200), np.uint16)
    labels[150:156, 20:26] = 1  # one small object in a large, empty slice
    image[labels > 0] = 1.0
    (s,), _ = prepare_samples(net, image, labels, TargetConfig())
    rng = np.random.default_rng(0)
    uniform = [random_crop(s, 48, rng)[1].any() for _ in range(40)]
    centred = [random_crop(s, 48, rng, objects=1.0)[1].any() for _ in range(40)]
    assert all(centred) and sum(uniform) < 20
    with pytest.raises(ValueError, match="object_crops"):
        TrainConfig(object_crops=1.5)


def test_train_config_carries_the_target_config_and_samples_do_not_import_train():
    import napari_unet.training.samples as samples

    cfg = TrainConfig(w0=3.0, sigma=2.0, class_balance=False, ignore_label=7, expand_labels=4)
    assert cfg.targets == TargetConfig(3.0, 2.0, False, 7, 4)
    tree = ast.parse(open(samples.__file__, encoding="utf-8").read())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "train" not in imported  # TargetConfig unties samples from train
