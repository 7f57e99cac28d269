"""A round that changes the input keeps the parent's weights when training does not beat them."""

from __future__ import annotations

import torch

from napari_unet.jobs import run
from napari_unet.training.denoise import SmoothConfig
from napari_unet.training.loop import RoundConfig, finetune_round
from napari_unet.training.scale import ScaleConfig
from napari_unet.training.train import TrainConfig

from ._images import blobs


def _cfg(lr: float, **kw) -> RoundConfig:
    train = TrainConfig(steps=3, lr=lr, tile=48, batch_size=2, device="cpu", amp=False, seed=0)
    return RoundConfig(train=train, scale=ScaleConfig(mode="keep"), smooth=SmoothConfig(mode="keep"),
                       **kw)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


def test_training_that_changes_nothing_leaves_the_new_input_with_the_parents_weights(net):
    img, lab = blobs(1, bright=False)
    res = run(finetune_round(net, img, lab, _cfg(1e-12, polarity="invert")))
    assert res.report.inverted and res.report.untrained
    assert res.model.config.normalization["invert"] is True
    assert _same_weights(res.model, net)  # the parent's weights, with the inverted input
    assert "did not beat the new input alone" in res.report.summary()
    assert not net.config.normalization.get("invert", False)  # the parent is untouched


def test_the_duel_is_off_when_asked_or_when_the_input_stays(net):
    img, lab = blobs(1, bright=False)
    off = run(finetune_round(net, img, lab, _cfg(1e-12, polarity="invert", untrained_duel=False)))
    assert off.report.inverted and not off.report.untrained
    kept = run(finetune_round(net, img, lab, _cfg(3e-3, polarity="keep")))
    assert not kept.report.inverted and not kept.report.untrained
    assert not _same_weights(kept.model, net)  # trained: nothing to duel with
