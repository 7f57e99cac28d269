import numpy as np
import pytest
import torch

from napari_unet.inference.predict import predict
from napari_unet.training.anchoring import anchor_crop, anchor_loss, prepare_anchors
from napari_unet.training.augment import AugmentConfig
from napari_unet.training.train import TrainConfig, fine_tune


def test_anchor_loss_is_zero_only_for_the_reference():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8)
    ref = torch.softmax(logits, dim=1)
    assert anchor_loss(logits, ref).item() == pytest.approx(0.0, abs=1e-5)
    assert anchor_loss(logits + torch.randn_like(logits), ref).item() > 0.01


def test_anchor_crops_pair_inputs_with_the_reference_of_their_output(tiny_net, blobs):
    img, _ = blobs
    anchors = prepare_anchors(tiny_net, [img, img[:40, :50]], device="cpu")
    h = tiny_net.halo
    assert anchors.images[0].shape == (1, 96 + 2 * h, 96 + 2 * h)
    assert anchors.probs[1].shape == (2, 40, 50)
    full = predict(tiny_net, img, device="cpu", precision="fp32")
    np.testing.assert_allclose(anchors.probs[0], full, atol=1e-4)  # one pass = the tiled result
    # large slices keep a central window; odd sizes too
    big = np.pad(img, ((10, 11), (3, 40)), mode="reflect")
    win = prepare_anchors(tiny_net, [big], device="cpu", window=64)
    assert win.images[0].shape == (1, 64 + 2 * h, 64 + 2 * h) and win.probs[0].shape == (2, 64, 64)
    st = tiny_net.stride  # the window starts on the stride grid
    y0, x0 = (big.shape[0] - 64) // 2 // st * st, (big.shape[1] - 64) // 2 // st * st
    ref = predict(tiny_net, big, device="cpu", precision="fp32")[:, y0 : y0 + 64, x0 : x0 + 64]
    np.testing.assert_allclose(win.probs[0], ref, atol=1e-4)
    rng = np.random.default_rng(0)
    tile = tiny_net.valid_input_size(64 + 2 * h)
    for _ in range(6):  # the small slice is mirrored up to the crop
        x, q = anchor_crop(anchors, tile, h, rng, st)
        assert x.shape == (1, tile, tile) and q.shape == (2, tile - 2 * h, tile - 2 * h)
        np.testing.assert_allclose(q.sum(axis=0), 1.0, atol=1e-5)
    # a crop on the stride grid sees what the reference pass saw: the anchor term starts at 0
    tile = tiny_net.valid_input_size(32 + 2 * h)
    for _ in range(4):
        x, q = anchor_crop(win, tile, h, rng, st)
        with torch.no_grad():
            logits = tiny_net(torch.from_numpy(x)[None])
        assert anchor_loss(logits, torch.from_numpy(q)[None]).item() < 1e-4
    with pytest.raises(ValueError, match="single 2D"):
        prepare_anchors(tiny_net, [np.stack([img, img])], device="cpu")


def test_anchoring_keeps_the_unannotated_slices_predictions(tiny_net, blobs):
    import copy

    img, lab = blobs
    other = np.random.default_rng(3).integers(0, 255, img.shape).astype(np.uint8)  # unannotated
    before = predict(tiny_net, other, device="cpu", precision="fp32")
    cfg = dict(steps=15, tile=32, lr=1e-2, optimizer="adam", device="cpu", amp=False,
               augment=AugmentConfig(enabled=False))
    changes = {}
    for weight in (0.0, 20.0):
        net = copy.deepcopy(tiny_net)
        events = list(fine_tune(net, img, lab, TrainConfig(anchor_weight=weight, **cfg),
                                anchors=[other]))
        assert len(events) == 15 and np.isfinite(events[-1].loss)
        assert net.record["anchor_slices"] == (1 if weight else 0)
        after = predict(net, other, device="cpu", precision="fp32")
        changes[weight] = float(np.abs(after - before).mean())
    assert changes[20.0] < 0.5 * changes[0.0]


def test_steps_report_the_corrections_loss_apart_from_the_anchoring_term(tiny_net, blobs):
    import copy

    img, lab = blobs
    other = np.random.default_rng(3).integers(0, 255, img.shape).astype(np.uint8)
    cfg = dict(steps=6, tile=32, lr=1e-2, optimizer="adam", device="cpu", amp=False,
               augment=AugmentConfig(enabled=False))
    plain = list(fine_tune(copy.deepcopy(tiny_net), img, lab, TrainConfig(**cfg)))
    assert all(ev.fit_loss is None for ev in plain)  # no anchors: the loss is the fit
    anchored = list(fine_tune(copy.deepcopy(tiny_net), img, lab,
                              TrainConfig(anchor_weight=20.0, **cfg), anchors=[other]))
    # the anchoring term (a KL divergence, >= 0) is added to the loss but not to the fit
    assert all(ev.fit_loss is not None and ev.fit_loss <= ev.loss + 1e-6 for ev in anchored)
    assert any(ev.loss > ev.fit_loss + 1e-3 for ev in anchored)
    assert all(ev.corrections_loss == ev.fit_loss for ev in anchored)
    assert all(ev.corrections_loss == ev.loss for ev in plain)


def test_blend_weights_moves_the_weights_towards_the_reference(make_tiny_net):
    from napari_unet.model import UNet
    from napari_unet.training.anchoring import blend_weights

    torch.manual_seed(1)
    model, ref = make_tiny_net(), make_tiny_net()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    blend_weights(model, ref, 1.0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    blend_weights(model, ref, 0.25)
    r = ref.state_dict()
    for k, v in model.state_dict().items():
        if v.is_floating_point():
            assert torch.allclose(v, 0.25 * before[k] + 0.75 * r[k], atol=1e-6)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        blend_weights(model, ref, 1.5)
    with pytest.raises(ValueError, match="different architectures"):
        blend_weights(model, UNet(depth=1, base_channels=4), 0.5)


def test_a_refining_round_on_objects_can_anchor_only_while_one_slice_is_corrected(monkeypatch):
    from napari_unet.jobs import run
    from napari_unet.model import UNet
    from napari_unet.training import loop
    from napari_unet.training.round_config import RoundConfig, corrected_amount

    assert corrected_amount([256 * 256, 100]) == 2.0 and corrected_amount([2**20]) == 4.0
    cfg = RoundConfig(train=TrainConfig(steps=2, tile=32, device="cpu", amp=False),
                      polarity="keep", anchor_below_slices_f1=2.0)
    assert RoundConfig().anchors_objects([2**20] * 8)  # off by default: anchors at every k
    assert cfg.anchors_objects([512 * 512]) and cfg.anchors_objects([520 * 696])
    assert not cfg.anchors_objects([256 * 256] * 2) and not cfg.anchors_objects([2**20])
    assert RoundConfig(anchor_below_slices_f1=float("inf")).anchors_objects([2**20] * 8)
    with pytest.raises(ValueError, match="anchor_below_slices_f1 must be >= 0"):
        RoundConfig(anchor_below_slices_f1=-1.0)
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 255, (3, 64, 64)).astype(np.uint8)
    labs = np.zeros((3, 64, 64), np.int32)
    labs[:2, 10:30, 10:30] = 1
    labs[:2, 40:55, 35:60] = 2
    monkeypatch.setattr(loop, "parent_quality", lambda *a, **k: 0.95)  # a good parent: refine
    torch.manual_seed(0)
    net = UNet(depth=2, base_channels=8)
    one = run(loop.finetune_round(net, imgs, labs, cfg, slices=[0], anchors=[imgs[2]]))
    two = run(loop.finetune_round(net, imgs, labs, cfg, slices=[0, 1], anchors=[imgs[2]]))
    assert one.report.regime == two.report.regime == "refine"
    assert one.report.anchored == 1 and two.report.anchored == 0
