"""What a round holds back for its self-check (napari_unet.training.selfcheck)."""

from __future__ import annotations

import numpy as np

from napari_unet.training.selfcheck import holdout_boxes, trainable


def _labels(n_objects: int, size: int = 64) -> np.ndarray:
    lab = np.zeros((size, size), np.uint16)
    for i in range(n_objects):
        y, x = divmod(i, 8)
        lab[2 + 7 * y : 6 + 7 * y, 2 + 7 * x : 6 + 7 * x] = i + 1
    return lab


def test_few_slices_hold_back_a_corner_block_of_each():
    labs = [_labels(5), _labels(9)]
    boxes = holdout_boxes(labs, 0.25, whole_from=4)
    assert sorted(boxes) == [0, 1] and boxes[0] != (slice(0, 64), slice(0, 64))
    imgs = [lab[None].astype(np.float32) for lab in labs]
    t_imgs, t_labs, t_boxes = trainable(imgs, labs, boxes)
    assert len(t_imgs) == 2 and t_boxes == boxes  # every slice trains, minus its block


def test_many_slices_hold_back_a_typical_slice_whole():
    labs = [_labels(n) for n in (16, 6, 9, 60)]
    boxes = holdout_boxes(labs, 0.25, whole_from=4)
    assert boxes == {2: (slice(0, 64), slice(0, 64))}  # 9 objects: the closest to the median
    imgs = [lab[None].astype(np.float32) for lab in labs]
    t_imgs, t_labs, t_boxes = trainable(imgs, labs, boxes)
    assert [int(x.max()) for x in t_labs] == [16, 6, 60] and t_boxes == {}
    assert len(holdout_boxes([_labels(5)] * 8, 0.25, whole_from=4)) == 2
    assert holdout_boxes(labs, 0.0, whole_from=4) == {}
    assert all(b != (slice(0, 64), slice(0, 64))
               for b in holdout_boxes(labs, 0.25, whole_from=0).values())


def test_a_round_on_four_slices_checks_on_one_it_never_trained_on():
    import torch

    from napari_unet.jobs import run
    from napari_unet.model import UNet
    from napari_unet.training.loop import RoundConfig, finetune_round
    from napari_unet.training.train import TrainConfig

    torch.manual_seed(0)
    net = UNet(depth=2, base_channels=4)
    labs = [_labels(n) for n in (16, 6, 9, 30)]
    imgs = [(40 + 150 * (lab > 0)).astype(np.uint8) for lab in labs]
    cfg = RoundConfig(train=TrainConfig(steps=2, tile=32, batch_size=1, device="cpu", amp=False),
                      polarity="keep")
    rep = run(finetune_round(net, imgs, labs, cfg)).report
    assert rep.whole_slices == 1 and rep.n_slices == 4
    assert rep.summary().startswith("on 1 corrected slice(s) held back (never trained on)")
    rep2 = run(finetune_round(net, imgs, labs, RoundConfig(train=cfg.train, polarity="keep",
                                                           holdout_whole_from=0))).report
    assert rep2.whole_slices == 0 and "held-back parts" in rep2.summary()
