"""Fixtures of the training tests."""

import pytest
import torch

from napari_unet.model import UNet


@pytest.fixture
def net() -> UNet:
    torch.manual_seed(0)
    model = UNet(depth=2, base_channels=8)
    model.record.update({"name": "parent", "description": "the parent's text",
                         "metrics": {"dev_twin_test_f1": 0.9}, "data": "somewhere else"})
    return model
