"""One round of the loop (napari_unet.training.loop): it learns, checks itself and describes itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_unet.jobs import Stage, run
from napari_unet.model import UNet
from napari_unet.normalize import Normalization
from napari_unet.training.loop import RoundConfig, finetune_round
from napari_unet.training.pairs import corrected_pairs, pick_slices
from napari_unet.training.selfcheck import holdout_box, holdout_boxes, score_blocks
from napari_unet.training.train import TrainConfig

from ._images import blobs as _blobs


def _run(gen):
    events: list = []
    return events, run(gen, events.append)


def _cfg(**kw) -> RoundConfig:
    train = TrainConfig(steps=kw.pop("steps", 60), lr=3e-3, tile=48, batch_size=2, device="cpu",
                        amp=False, seed=0)
    return RoundConfig(train=train, **kw)


def _pixel_error(model: UNet, image: np.ndarray, labels: np.ndarray) -> float:
    from napari_unet.inference.predict import predict

    p = predict(model, image, device="cpu", precision="fp32", tta=False)
    return float(((p[1] > 0.5) != (labels > 0)).mean())


def test_a_round_lowers_the_corrected_images_error_and_not_a_held_back_ones(net):
    img, lab = _blobs(0)
    other_img, other_lab = _blobs(5)
    before = _pixel_error(net, img, lab), _pixel_error(net, other_img, other_lab)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    events, res = _run(finetune_round(net, img, lab, _cfg(polarity="keep")))
    after = _pixel_error(res.model, img, lab), _pixel_error(res.model, other_img, other_lab)
    assert after[0] < before[0] - 0.05
    assert after[1] <= before[1]
    assert res.accepted and res.report.new_score > res.report.parent_score
    assert res.report.loss_last < 0.8 * res.report.loss_first
    assert any(isinstance(e, Stage) for e in events)
    for k, v in net.state_dict().items():  # the parent is untouched
        torch.testing.assert_close(v, state[k])


def test_the_new_record_describes_the_new_model(net):
    img, lab = _blobs(0)
    _, res = _run(finetune_round(net, img, lab, _cfg(steps=3, polarity="keep"), name="v2"))
    rec = res.model.record
    assert rec["name"] == "v2" and rec["parent"] == "parent"
    assert rec["description"].startswith("Fine-tuned from parent on 1 corrected slice")
    assert "dev_twin_test_f1" not in rec["metrics"] and rec["data"] != "somewhere else"
    assert rec["self_check"]["steps"] == 3 and rec["history"][-1]["parent"] == "parent"
    assert net.record["description"] == "the parent's text"


def test_the_polarity_check_inverts_for_dark_objects_on_bright(net):
    bright = [_blobs(s) for s in range(3)]
    _, first = _run(finetune_round(net, [b[0] for b in bright], [b[1] for b in bright],
                                   _cfg(steps=80, polarity="keep")))
    assert not first.report.inverted
    dark_img, dark_lab = _blobs(7, bright=False)
    _, res = _run(finetune_round(first.model, dark_img, dark_lab, _cfg(steps=2)))
    assert res.report.inverted
    assert res.model.config.normalization["invert"] is True
    assert not first.model.config.normalization.get("invert", False)


def test_a_copy_of_the_parent_is_not_better_than_the_parent(net):
    img, lab = _blobs(0)
    boxes = {0: holdout_box(lab.shape, 0, 0.25)}
    x = [img[None].astype(np.float32)]
    _, check = _run(score_blocks(net, net, x, [lab], boxes, "cpu"))
    assert not check.better and check.parent_score == check.new_score
    _, tie = _run(score_blocks(net, net, x, [lab], boxes, "cpu", pixel_margin=0.01))
    assert tie.by_pixels and tie.better  # within the pixel margin a tie goes to the new one


def test_the_check_scores_only_the_held_back_slices(net, monkeypatch):
    from napari_unet.training import selfcheck

    pairs = [_blobs(s) for s in range(3)]
    imgs = [im[None].astype(np.float32) for im, _ in pairs]
    labs = [lab for _, lab in pairs]
    boxes = {1: (slice(0, 96), slice(0, 96))}  # slice 1 held back whole; 0 and 2 were trained
    seen: list = []
    real = selfcheck.predict_regions

    def spy(model, images, labels, bxs, device):
        seen.append([id(lab) for lab in labels])
        return (yield from real(model, images, labels, bxs, device))

    monkeypatch.setattr(selfcheck, "predict_regions", spy)
    _run(score_blocks(net, net, imgs, labs, boxes, "cpu"))
    assert seen == [[id(labs[1])], [id(labs[1])]]
    seen.clear()
    _run(score_blocks(net, net, imgs, labs, {}, "cpu"))  # nothing held back: every slice, whole
    assert seen[0] == [id(lab) for lab in labs]


def test_holdout_boxes_turn_corners_and_keep_the_fraction():
    boxes = [holdout_box((100, 200), i, 0.25) for i in range(4)]
    assert [(b[0].start, b[1].start) for b in boxes] == [(0, 0), (0, 100), (50, 100), (50, 0)]
    assert all((b[0].stop - b[0].start) * (b[1].stop - b[1].start) == 50 * 100 for b in boxes)
    assert holdout_box((100, 200), 0, 0.0) is None and holdout_box((20, 20), 0, 0.25) is None


def test_the_held_back_block_holds_its_share_of_the_objects():
    lab = np.zeros((100, 100), np.int32)  # four objects top left, one bottom right
    for i, (y, x) in enumerate([(5, 5), (5, 30), (30, 5), (30, 30), (80, 80)], 1):
        lab[y : y + 8, x : x + 8] = i
    for index in range(4):  # the turning corner would hold back none or most of them
        b = holdout_box(lab.shape, index, 0.25, lab)
        assert (b[0].start, b[1].start) == (50, 50)
    lab[80:88, 80:88] = 0  # all in one corner: training keeps them, the corner turns
    assert holdout_box(lab.shape, 1, 0.25, lab) == holdout_box(lab.shape, 1, 0.25)
    one = np.zeros((100, 100), np.int32)
    one[60:70, 60:70] = 1  # a single object stays in training: the corner turns as before
    assert holdout_box(one.shape, 0, 0.25, one)[:2] == holdout_box(one.shape, 0, 0.25)
    spread = np.zeros((100, 100), np.int32)  # one object in each corner: ties keep the turn
    for i, (y, x) in enumerate([(10, 10), (10, 80), (80, 80), (80, 10)], 1):
        spread[y : y + 8, x : x + 8] = i
    assert [holdout_box(spread.shape, i, 0.25, spread) for i in range(4)] == \
        [holdout_box(spread.shape, i, 0.25) for i in range(4)]
    big = np.where(lab > 0, lab.astype(np.int64) * 10**9, 0)  # painted ids can be any size
    assert holdout_box(big.shape, 0, 0.25, big) == holdout_box(lab.shape, 0, 0.25, lab)
    # cells that tile the image (EM) keep the turning corners
    assert holdout_boxes([lab, lab], 0.25, objects=False) == \
        {i: holdout_box(lab.shape, i, 0.25) for i in range(2)}
    assert holdout_boxes([lab], 0.25)[0] == holdout_box(lab.shape, 0, 0.25, lab)


def test_steps_scale_with_the_corrected_data():
    cfg = RoundConfig()
    one, four = cfg.steps_for([256 * 256]), cfg.steps_for([256 * 256] * 4)
    assert one < four <= cfg.steps_max
    cfg.train.steps = 7
    assert cfg.steps_for([1]) == 7


def test_a_round_that_blends_back_into_its_parent_trains_fewer_steps():
    from napari_unet.training.loop import _train_config

    cfg, labs = RoundConfig(), [np.zeros((512, 512), np.int32)] * 4
    full = _train_config(cfg, labs, refine=True, anchor=True, fill=True).steps
    assert full == cfg.steps_for([lab.size for lab in labs]) == 260
    assert _train_config(cfg, labs, True, True, True, blend=True).steps == 208
    cfg.train.steps = 50  # steps the user asked for stay
    assert _train_config(cfg, labs, True, True, True, blend=True).steps == 50


def test_corrected_pairs_and_bad_input():
    img = np.zeros((3, 40, 40), np.uint8)
    lab = np.zeros((3, 40, 40), np.uint16)
    lab[1, 5:9, 5:9] = 1
    imgs, labs, zs = corrected_pairs(img, lab, None, None, 1)
    assert zs == [1] and imgs[0].shape == (1, 40, 40) and labs[0].shape == (40, 40)
    with pytest.raises(ValueError, match="no corrected slice"):
        corrected_pairs(img, np.zeros_like(lab), None, None, 1)
    with pytest.raises(ValueError, match="out of range"):
        corrected_pairs(img, lab, [5], None, 1)
    with pytest.raises(ValueError, match="polarity"):
        RoundConfig(polarity="upside-down")
    assert pick_slices(10, [0, 1], 3) == [2, 6, 9]


def test_inverted_normalisation_and_its_fixed_twin():
    from napari_unet.inference.largedata import global_normalization

    x = np.arange(100, dtype=np.float32).reshape(10, 10)
    plain, inv = Normalization()(x), Normalization(invert=True)(x)
    np.testing.assert_allclose(inv, 1 - plain, atol=1e-6)
    model = UNet(depth=2, base_channels=4, normalization={"mode": "percentile", "invert": True})
    fixed = Normalization.from_dict(global_normalization(model, x).config.normalization)
    np.testing.assert_allclose(fixed(x), inv, atol=1e-4)


def test_colour_images_become_what_the_model_takes():
    from napari_unet.inference.inputs import to_model_channels

    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[..., 1] = 100
    gray, axis = to_model_channels(rgb, 1)
    assert axis is None and gray.shape == (20, 30) and np.allclose(gray, 58.7)
    green, _ = to_model_channels(rgb, 1, channel=1)
    assert np.all(green == 100)
    same, axis = to_model_channels(rgb, 3)
    assert same is rgb and axis == 2
    with pytest.raises(ValueError, match="out of range"):
        to_model_channels(rgb, 1, channel=5)


def test_anchors_are_used_only_where_the_parent_already_segments_the_corrections(net, monkeypatch):
    from napari_unet.training import loop

    img, lab = _blobs(0)
    free = [_blobs(s)[0] for s in (3, 4)]
    _, res = _run(finetune_round(net, img, lab, _cfg(steps=2, polarity="keep"), anchors=free))
    assert res.report.anchored == 0  # an untrained parent disagrees: no anchoring
    monkeypatch.setattr(loop, "parent_quality", lambda *a, **k: 0.95)
    _, res = _run(finetune_round(net, img, lab, _cfg(steps=2, polarity="keep"), anchors=free))
    assert res.report.anchored == 2 and res.model.record["anchor_slices"] == 2


def test_a_round_yields_between_its_predictions_and_stops_when_closed(net):
    from napari_unet.training.train import TrainEvent

    img, lab = _blobs(0)
    free = [_blobs(s)[0] for s in (3, 4)]
    gen = finetune_round(net, img, lab, _cfg(steps=50, polarity="auto"), anchors=free)
    before_training = []
    for ev in gen:
        if isinstance(ev, TrainEvent):
            break
        before_training.append(ev)
    assert sum("predicting slice" in e.message for e in before_training) >= 2  # parent, polarity
    gen.close()  # stopping the iteration cancels: nothing is returned, the parent is unchanged
    assert net.record["name"] == "parent" and "self_check" not in net.record


def test_the_round_is_part_of_the_public_api():
    import napari_unet

    assert napari_unet.finetune_round is finetune_round
    assert napari_unet.RoundConfig is RoundConfig
    assert set(napari_unet.__all__) >= {"load_model", "predict", "finetune_round"}


def test_thresholds_change_only_for_a_clear_gain_on_the_held_back_blocks():
    from napari_unet.training.selfcheck import tune_postprocess

    _, lab = _blobs(0)
    fg = (lab > 0).astype(np.float32)
    whole = (slice(None), slice(None))
    settings = {"threshold": 0.7, "watershed": False, "min_size": 0, "fill": False,
                "seed_threshold": None}
    sure = np.stack([1 - fg, fg])  # every threshold finds every object: keep the settings
    assert tune_postprocess(settings, [(sure, lab, whole)])[0] == settings
    unsure = np.stack([1 - 0.6 * fg, 0.6 * fg])  # at 0.7 nothing is found: lower it
    new, score = tune_postprocess(settings, [(unsure, lab, whole)])
    assert new["threshold"] < 0.6 and score > 0.9  # (two touching blobs stay one object)


def test_a_refined_version_takes_the_threshold_that_reproduces_the_parent_elsewhere():
    from napari_unet.training.agreement import anchor_agreement
    from napari_unet.training.selfcheck import tune_postprocess

    lab = np.zeros((65, 65), np.int32)  # 4 x 4 cells split by one-pixel lines, as EM labels
    for i in range(4):
        for j in range(4):
            lab[1 + 16 * i : 16 * (i + 1), 1 + 16 * j : 16 * (j + 1)] = 1 + 4 * i + j
    line = lab == 0

    def probs(on_lines: float) -> np.ndarray:
        fg = np.where(line, on_lines, 0.95).astype(np.float32)
        return np.stack([1 - fg, fg])

    settings = {"threshold": 0.5, "watershed": False, "min_size": 0, "fill": True}
    block = [(probs(0.0), lab, (slice(None), slice(None)))]  # every threshold is perfect here
    # on the uncorrected slices the new version is less sure of the membranes: at the
    # parent's 0.5 its seeds leak into one another and every cell merges
    prefer = anchor_agreement(settings, [probs(0.3)], [probs(0.55)])
    assert tune_postprocess(settings, block)[0]["threshold"] == 0.5
    picked, score = tune_postprocess(settings, block, prefer=prefer)
    assert picked["threshold"] >= 0.6 and score < 1e-6
    assert prefer(picked) > prefer(settings) + 0.1


def test_a_small_gain_in_agreement_with_the_parent_does_not_move_the_thresholds():
    from napari_unet.training.selfcheck import tune_postprocess

    _, lab = _blobs(0)
    fg = (lab > 0).astype(np.float32)
    block = [(np.stack([1 - fg, fg]), lab, (slice(None), slice(None)))]  # all perfect
    settings = {"threshold": 0.5, "watershed": False, "min_size": 0, "fill": False,
                "seed_threshold": None}

    def slight(c: dict) -> float:  # one candidate agrees a little better, within the noise
        return 0.005 if c["threshold"] == 0.4 and c["seed_threshold"] is None else 0.0

    assert tune_postprocess(settings, block, prefer=slight)[0] == settings
    picked, _ = tune_postprocess(settings, block, prefer=lambda c: 2 * slight(c) + slight(c))
    assert picked["threshold"] == 0.4  # a clear gain (0.015 > half the 0.02 margin) moves it


def test_agreement_must_gain_one_anchor_object_to_move_the_thresholds():
    from napari_unet.inference.postprocess import labels_from_probabilities
    from napari_unet.training.agreement import anchor_agreement
    from napari_unet.training.selfcheck import tune_postprocess

    _, lab = _blobs(0)
    fg = (lab > 0).astype(np.float32)
    probs = np.stack([1 - fg, fg])
    settings = {"threshold": 0.5, "watershed": False, "min_size": 0, "fill": False,
                "seed_threshold": None}
    agreement = anchor_agreement(settings, [probs, probs], [probs, probs])
    ref = labels_from_probabilities(probs, **settings)  # the parent's objects on the anchors
    n = 2 * len(np.unique(ref[ref > 0]))
    assert agreement.resolution == pytest.approx(1 / n) and agreement(settings) == 1.0
    assert anchor_agreement({**settings, "fill": True}, [probs], [probs]).resolution == 0.0

    class Slight:  # 0.015 over 0.5: more than half the margin, less than one object of 40
        resolution = 1 / 40

        def __call__(self, c: dict) -> float:
            return 0.015 if c["threshold"] == 0.4 and c["seed_threshold"] is None else 0.0

    block = [(probs, lab, (slice(None), slice(None)))]
    assert tune_postprocess(settings, block, prefer=Slight())[0] == settings
    Slight.resolution = 1 / 100
    assert tune_postprocess(settings, block, prefer=Slight())[0]["threshold"] == 0.4


def test_equal_scores_are_a_tie_for_the_pixels_in_either_regime():
    from napari_unet.training.selfcheck import decisive

    assert not decisive(0.0, 0.0)  # adapt: 0.000 -> 0.000 is a tie, not a loss
    assert decisive(1e-3, 0.0) and decisive(-1e-3, 0.0)
    assert not decisive(0.005, 0.01) and decisive(0.01, 0.01) and decisive(-0.02, 0.01)


def test_a_tie_on_the_held_back_blocks_is_reported_as_a_tie():
    from napari_unet.training.report import RoundReport

    rep = RoundReport(metric="F1", parent_score=1.0, new_score=1.0, accepted=True,
                      held_back=True, inverted=False, anchored=0, steps=1, seconds=1.0,
                      n_slices=1, loss_first=1.0, loss_last=0.5, postprocess={},
                      by_pixels=True)
    assert "F1 1.000 -> 1.000 (better: a tie, decided by the pixels)" in rep.summary()
    rep.by_pixels, rep.new_score = False, 0.9
    assert rep.summary().endswith("(better)")
    rep.metric, rep.tied, rep.new_score = "adapted Rand error", True, 1.0  # EM: no pixels
    assert "(as good, a tie: kept, a blend mostly of the parent's weights)" in rep.summary()
    rep.accepted = False
    assert rep.summary().endswith("(NOT better (a tie): keep the parent)")


def test_for_a_good_parent_scores_within_the_margin_are_a_tie_the_pixels_decide(net,
                                                                                monkeypatch):
    from napari_unet.training import loop

    img, lab = _blobs(0)

    def sure(model, probs, labels):  # the parent already segments the corrections well
        return 1.0

    monkeypatch.setattr(loop, "parent_quality", sure)
    res = run(finetune_round(net, img, lab, _cfg(steps=2, refine_margin_f1=2.0)))
    assert res.report.regime == "refine" and res.report.by_pixels  # no F1 gap reaches 2.0
    assert "a tie" in res.report.summary()


def test_em_thresholds_step_up_one_step():
    from napari_unet.training.selfcheck import seen_step_up

    em = {"threshold": 0.5, "watershed": False, "min_size": 0, "fill": True}
    assert seen_step_up(em)["threshold"] == 0.6
    assert seen_step_up({**em, "threshold": 0.9})["threshold"] == 0.9  # the top stays
    assert em["threshold"] == 0.5  # the input is not modified


def test_adapting_keeps_the_input_layer_and_refining_trains_it(net, monkeypatch):
    from napari_unet.training import loop

    img, lab = _blobs(0)
    inc = {k: v.clone() for k, v in net.inc.state_dict().items()}
    for quality, regime, frozen in ((0.0, "adapt", True), (1.0, "refine", False)):
        monkeypatch.setattr(loop, "parent_quality", lambda m, p, lb, q=quality: q)
        res = _run(finetune_round(net, img, lab, _cfg(steps=3)))[1]
        assert res.report.regime == regime
        same = all(torch.equal(v, inc[k]) for k, v in res.model.inc.state_dict().items())
        assert same is frozen
    with pytest.raises(ValueError, match="adapt_freeze must be one of"):
        RoundConfig(adapt_freeze="all")
