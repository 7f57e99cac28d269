"""The round's self-check (napari_unet.training.selfcheck) and the blend before it."""

from __future__ import annotations

import copy

import numpy as np
import torch

from napari_unet.jobs import run
from napari_unet.training.loop import finetune_round
from napari_unet.training.selfcheck import holdout_box, score_blocks

from .test_loop import _blobs, _cfg, _run


def test_a_refined_version_is_blended_back_towards_its_parent(net, monkeypatch):
    from napari_unet.training import loop

    img, lab = _blobs(0)
    monkeypatch.setattr(loop, "parent_quality", lambda model, probs, labels: 1.0)
    parent = {k: v.clone() for k, v in net.state_dict().items()}

    def moved(share: float) -> float:
        res = run(finetune_round(net, img, lab, _cfg(steps=3, refine_blend_f1=share)))
        assert res.report.regime == "refine"
        return max(float((v - parent[k]).abs().max())
                   for k, v in res.model.state_dict().items() if v.is_floating_point())

    assert moved(0.0) == 0.0  # all parent
    assert moved(1.0) > 0.0  # the trained weights
    assert all(torch.equal(v, parent[k]) for k, v in net.state_dict().items())  # untouched


def test_a_failing_parent_is_scored_with_its_own_thresholds(net, monkeypatch):
    from napari_unet.training import loop, selfcheck

    img, lab = _blobs(0)
    tuned: list = []
    real = selfcheck.tune_postprocess
    monkeypatch.setattr(selfcheck, "tune_postprocess",
                        lambda *a, **kw: tuned.append(a[1]) or real(*a, **kw))
    for quality, regime, n_tuned in ((0.0, "adapt", 1), (1.0, "refine", 2)):
        tuned.clear()
        monkeypatch.setattr(loop, "parent_quality", lambda m, p, lb, q=quality: q)
        res = run(finetune_round(net, img, lab, _cfg(steps=2)))
        assert res.report.regime == regime
        assert len(tuned) == n_tuned  # adapt: only the new version's thresholds are tuned


def test_a_tie_keeps_a_good_parent_of_tiling_cells_and_goes_to_the_pixels_for_objects(net):
    img, lab = _blobs(0)
    boxes = {0: holdout_box(lab.shape, 0, 0.25)}
    x = [img[None].astype(np.float32)]
    new = copy.deepcopy(net)
    with torch.no_grad():  # a different network, so that the pixels can favour one of them
        for p in new.parameters():
            p.add_(0.05 * torch.randn_like(p))
    results = {}
    for fill in (False, True):
        for m in (net, new):
            m.record["postprocess"] = {"threshold": 0.5, "fill": fill, "min_size": 0}
        _, results[fill] = _run(score_blocks(net, new, x, [lab], boxes, "cpu", margin=2.0))
    assert results[False].by_pixels  # objects: no score gap reaches 2.0, the pixels decide
    assert not results[True].by_pixels and not results[True].better  # EM: the parent stays
    assert results[True].tied
    _, blend = _run(score_blocks(net, new, x, [lab], boxes, "cpu", margin=2.0, blended=True))
    assert blend.tied and blend.better and not blend.by_pixels  # a blend into the parent wins


def test_a_tie_on_objects_goes_to_the_new_version_unless_its_pixels_are_clearly_worse(net):
    img, lab = _blobs(0)
    boxes = {0: holdout_box(lab.shape, 0, 0.25)}
    x = [img[None].astype(np.float32)]
    from napari_unet.training.train import TrainConfig, fine_tune

    run(fine_tune(net, img, lab, TrainConfig(steps=30, tile=32, device="cpu")))
    net.record["postprocess"] = {"threshold": 0.5, "fill": False, "min_size": 0}
    blind = copy.deepcopy(net)  # sees background everywhere: every foreground pixel wrong
    with torch.no_grad():
        blind.head.bias.copy_(torch.tensor([50.0, -50.0]))
    for pixel_margin in (0.01, 0.0):
        _, check = _run(score_blocks(net, blind, x, [lab], boxes, "cpu", margin=2.0,
                                     pixel_margin=pixel_margin))
        assert check.by_pixels and not check.better
    _, same = _run(score_blocks(net, copy.deepcopy(net), x, [lab], boxes, "cpu", margin=2.0,
                                pixel_margin=0.01))
    assert same.by_pixels and same.better


def test_em_thresholds_step_up_on_blocks_and_on_whole_held_back_slices(net, monkeypatch):
    from napari_unet.training import selfcheck

    img, lab = _blobs(0)
    x = [img[None].astype(np.float32)]
    net.record["postprocess"] = {"threshold": 0.5, "fill": True, "min_size": 0}
    monkeypatch.setattr(selfcheck, "tune_postprocess", lambda s, regions, **kw: (dict(s), 0.0))
    whole = (slice(0, lab.shape[0]), slice(0, lab.shape[1]))
    for box in (holdout_box(lab.shape, 0, 0.25), whole):
        for step_whole in (True, False):
            _, check = _run(score_blocks(net, copy.deepcopy(net), x, [lab], {0: box}, "cpu",
                                         step_whole=step_whole))
            stepped = step_whole or box != whole  # blocks of trained slices always step
            assert check.new_postprocess["threshold"] == (0.6 if stepped else 0.5)


def test_the_f1_noise_of_a_few_held_back_objects():
    from napari_unet.training._ties import f1_noise, n_objects

    assert abs(f1_noise(1.0, 0.824, 9) - np.sqrt(0.824 * 0.176 / 9)) < 1e-12
    assert f1_noise(0.885, 0.773, 7) > f1_noise(0.885, 0.773, 70) > 0
    assert f1_noise(0.0, 1.0, 5) == 0.0 and f1_noise(0.5, 0.5, 0) == 0.0
    truth = np.zeros((8, 8), np.int32)
    truth[:2, :2], truth[5:, 5:], truth[0, 7] = 1, 2, 3
    box = (slice(0, 4), slice(0, 8))
    assert n_objects([(None, truth, box), (None, truth, (slice(4, 8), slice(0, 8)))]) == 3


def test_a_gap_within_the_noise_of_the_held_back_objects_is_a_tie(net, monkeypatch):
    from napari_unet.training import selfcheck
    from napari_unet.training.train import TrainConfig, fine_tune

    img, lab = _blobs(0)
    boxes = {0: holdout_box(lab.shape, 0, 0.25)}
    x = [img[None].astype(np.float32)]
    run(fine_tune(net, img, lab, TrainConfig(steps=30, tile=32, device="cpu")))
    net.record["postprocess"] = {"threshold": 0.5, "fill": False, "min_size": 0}
    blind = copy.deepcopy(net)  # finds nothing: F1 0 on the block
    with torch.no_grad():
        blind.head.bias.copy_(torch.tensor([50.0, -50.0]))
    _, plain = _run(score_blocks(net, blind, x, [lab], boxes, "cpu"))
    assert plain.parent_score > 0 and not plain.better and not plain.tied  # the F1 decides
    seen = []
    monkeypatch.setattr(selfcheck, "f1_noise", lambda p, n, k: seen.append(k) or 1.0)
    _, noisy = _run(score_blocks(net, blind, x, [lab], boxes, "cpu", noise_z=1.5))
    assert noisy.tied and noisy.by_pixels and not noisy.better  # its pixels are worse
    assert seen and seen[0] > 0  # counted on the held-back block's objects


def test_a_retuned_threshold_must_beat_the_noise_of_the_held_back_objects():
    from napari_unet.training.selfcheck import tune_postprocess

    truth = np.zeros((40, 40), np.int32)
    truth[5:15, 5:15], truth[25:35, 25:35] = 1, 2
    fg = np.where(truth == 1, 0.55, np.where(truth == 2, 0.45, 0.05))
    regions = [(np.stack([1 - fg, fg]), truth, (slice(0, 40), slice(0, 40)))]
    settings = {"threshold": 0.5, "watershed": False, "min_size": 0, "fill": False,
                "seed_threshold": None}
    plain, score = tune_postprocess(settings, regions)
    assert plain["threshold"] == 0.4 and score == 1.0  # both objects: F1 0.667 -> 1.0
    kept, score = tune_postprocess(settings, regions, noise_z=1.5)  # 2 objects: +-0.33
    assert kept == settings and abs(score - 2 / 3) < 1e-9
    em = {**settings, "fill": True}  # cells that tile the image: no objects' noise
    assert tune_postprocess(em, regions, noise_z=1.5) == tune_postprocess(em, regions)
