"""Bad input to the training loop, the border weights and the augmentation: clear errors."""

from __future__ import annotations

import numpy as np
import pytest


# --- the training loop, border weights and augmentation refuse nonsense ---------------------
@pytest.mark.parametrize("kwargs, message", [
    ({"lr": float("nan")}, "lr must be a finite number"),
    ({"lr": 0.0}, "need lr > 0"),
    ({"batch_size": 0}, "batch_size must be an integer >= 1"),
    ({"checkpoint_every": 0}, "checkpoint_every must be an integer >= 1"),
    ({"tile": 0}, "tile must be an integer >= 8"),
    ({"anchor_weight": float("nan")}, "anchor_weight must be a finite number"),
    ({"w0": 1e308}, "need finite w0 >= 0"),
    ({"sigma": 0.0}, "sigma > 0"),
    ({"steps": -5}, "steps must be an integer >= 0"),
])
def test_train_config_refuses_nonsense(kwargs, message):
    from napari_unet.training.train import TrainConfig

    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)


def test_fine_tune_refuses_zero_steps_and_a_dict_config(tiny_net, blobs):
    from napari_unet.training.train import TrainConfig, fine_tune

    img, lab = blobs
    with pytest.raises(ValueError, match="steps must be at least 1"):
        next(fine_tune(tiny_net, img, lab, TrainConfig(steps=0)))
    with pytest.raises(TypeError, match="config must be a TrainConfig"):
        next(fine_tune(tiny_net, img, lab, {"steps": 3}))


def test_border_weights_refuse_rgb_labels_and_infinite_parameters():
    from napari_unet.training.border_weights import border_weight_map

    with pytest.raises(ValueError, match="look like an RGB"):
        border_weight_map(np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="need finite w0"):
        border_weight_map(np.zeros((8, 8), np.uint8), w0=1e308)
    with pytest.raises(ValueError, match="sigma > 0"):
        border_weight_map(np.zeros((8, 8), np.uint8), sigma=float("nan"))


@pytest.mark.parametrize("kwargs", [{"grid": 0}, {"sigma": float("nan")}, {"sigma": float("inf")}])
def test_elastic_deform_refuses_bad_parameters(kwargs):
    from napari_unet.training.augment import elastic_deform

    with pytest.raises(ValueError):
        elastic_deform(np.zeros((16, 16), np.float32), np.zeros((16, 16), np.uint8), **kwargs)
