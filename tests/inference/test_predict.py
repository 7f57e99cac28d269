import numpy as np
import pytest
import torch
from skimage.measure import label as cc_label

from napari_unet.inference.postprocess import labels_from_probabilities
from napari_unet.inference.predict import Progress, predict, predict_iter, recommended_tta
from napari_unet.jobs import run
from napari_unet.model import UNet


def whole_image_pass(net: UNet, img: np.ndarray) -> np.ndarray:
    """Independent single pass over the mirrored image, for comparison with tiling."""
    h = net.halo
    H, W = (net.valid_input_size(n + 2 * h) for n in img.shape)
    x = np.pad(img, ((h, H - img.shape[0] - h), (h, W - img.shape[1] - h)), mode="reflect")
    with torch.no_grad():
        out = torch.softmax(net(torch.from_numpy(x.astype(np.float32))[None, None]), 1)[0]
    off = 0 if net.config.padding == "valid" else h
    return out[:, off : off + img.shape[0], off : off + img.shape[1]].numpy()


@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("tile", [44, 61, 100])
def test_tiles_are_seamless_on_odd_sizes(padding, tile):
    torch.manual_seed(0)
    net = UNet(depth=3, base_channels=4, padding=padding, normalization={"mode": "none"}).eval()
    img = np.random.default_rng(0).random((97, 131)).astype(np.float32)
    tiled = predict(net, img, tile=tile, batch_size=3, precision="fp32")
    assert tiled.shape == (2, 97, 131)
    np.testing.assert_allclose(tiled, whole_image_pass(net, img), atol=1e-4)


def test_progress_generator_and_cancel(tiny_net):
    img = np.random.default_rng(0).random((3, 80, 80)).astype(np.float32)
    gen = predict_iter(tiny_net, img, tile=40, batch_size=1)
    events = []
    for ev in gen:
        events.append(ev)
        if len(events) == 2:
            break
    gen.close()  # cancelling is stopping the iteration
    assert isinstance(events[0], Progress) and events[1].done == 2
    res = run(predict_iter(tiny_net, img, tile=40, batch_size=2))
    assert res.probabilities.shape == (2, 3, 80, 80)
    np.testing.assert_allclose(res.probabilities.sum(0), 1, atol=1e-5)


def test_only_selected_slices_are_predicted(tiny_net):
    img = np.random.default_rng(0).random((4, 40, 50)).astype(np.float32)
    res = run(predict_iter(tiny_net, img, slices=[2], uncertainty=True))
    assert res.slices == [2]
    assert res.probabilities[:, [0, 1, 3]].max() == 0
    assert res.probabilities[:, 2].sum(0).min() > 0.99
    assert res.uncertainty.shape == (4, 40, 50) and res.uncertainty[2].max() > 0


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float64])
def test_dtypes_and_image_smaller_than_a_tile(tiny_net, dtype):
    img = (np.random.default_rng(0).random((5, 7)) * 200).astype(dtype)
    p = predict(tiny_net, img)
    assert p.shape == (2, 5, 7) and p.dtype == np.float32


def test_channels_and_rgb():
    torch.manual_seed(0)
    net = UNet(depth=2, base_channels=4, in_channels=3).eval()
    rgb = np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    p_rgb = predict(net, rgb)
    p_chw = predict(net, np.moveaxis(rgb, -1, 0))
    assert p_rgb.shape == (2, 30, 40)
    np.testing.assert_allclose(p_rgb, p_chw, atol=1e-6)
    zcyx = np.stack([np.moveaxis(rgb, -1, 0)] * 2)
    assert predict(net, zcyx, channel_axis=1).shape == (2, 2, 30, 40)


def test_tta_is_invariant_to_flips(tiny_net):
    img = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    res = run(predict_iter(tiny_net, img, tta=True, uncertainty=True, precision="fp32"))
    flipped = predict(tiny_net, img[:, ::-1].copy(), tta=True, precision="fp32")
    np.testing.assert_allclose(res.probabilities[:, :, ::-1], flipped, atol=1e-4)
    assert res.uncertainty.shape == (64, 64)


def test_tta_default_follows_the_model(tiny_net):
    img = np.random.default_rng(1).random((40, 52)).astype(np.float32)
    assert recommended_tta(tiny_net) is False
    plain = predict(tiny_net, img, precision="fp32")
    tiny_net.record["predict"] = {"tta": True}
    assert recommended_tta(tiny_net) is True
    default = predict(tiny_net, img, precision="fp32")
    np.testing.assert_allclose(default, predict(tiny_net, img, tta=True, precision="fp32"), atol=1e-6)
    assert np.abs(default - plain).max() > 1e-3  # a random net is not flip-invariant
    np.testing.assert_allclose(predict(tiny_net, img, tta=False, precision="fp32"), plain, atol=1e-6)


@pytest.mark.parametrize(
    "image, kwargs, match",
    [
        (np.zeros((2, 3, 4, 5)), {}, "channel"),
        (np.zeros((0, 5)), {}, "empty"),
        (np.full((8, 8), np.nan), {}, "NaN"),
        (np.zeros((3, 8, 8, 2)), {"channel_axis": -1}, "channel"),
        (np.zeros(5), {}, "2D"),
        (np.zeros((20, 30, 3), np.uint8), {}, "RGB"),
    ],
)
def test_bad_input_gets_a_clear_error(tiny_net, image, kwargs, match):
    with pytest.raises(ValueError, match=match):
        predict(tiny_net, image, **kwargs)


def test_unknown_device_is_rejected(tiny_net):
    with pytest.raises(ValueError, match="device"):
        predict(tiny_net, np.zeros((8, 8)), device="tpu")


def test_bf16_is_close_to_fp32_and_leaves_the_model_alone(tiny_net, monkeypatch):
    from napari_unet import devices

    img = np.random.default_rng(0).random((70, 90)).astype(np.float32)
    ref = predict(tiny_net, img, precision="fp32")
    res = run(predict_iter(tiny_net, img, precision="bf16"))
    half = res.probabilities
    assert res.precision == "bf16"
    assert half.dtype == np.float32 and half.shape == ref.shape
    assert 0 < np.abs(half - ref).max() < 0.05  # really reduced precision, still close
    assert all(p.dtype == torch.float32 for p in tiny_net.parameters())  # a copy was converted
    monkeypatch.setattr(devices, "cpu_has_fast_bf16", lambda: False)
    np.testing.assert_array_equal(predict(tiny_net, img), ref)  # auto = fp32 without AMX
    monkeypatch.setattr(devices, "cpu_has_fast_bf16", lambda: True)
    np.testing.assert_array_equal(predict(tiny_net, img), half)  # auto = bf16 with AMX


def test_unknown_precision_is_rejected(tiny_net):
    with pytest.raises(ValueError, match="precision"):
        predict(tiny_net, np.zeros((8, 8)), precision="int4")


def test_labels_separate_touching_objects_and_watershed_regrows():
    p = np.zeros((2, 20, 30), np.float32)
    p[1, 5:15, 3:14] = 0.9
    p[1, 5:15, 15:27] = 0.9  # a 1-px predicted border at x=14
    p[0] = 1 - p[1]
    lab = labels_from_probabilities(p)
    assert lab.max() == 2 and lab[10, 14] == 0
    grown = labels_from_probabilities(p, watershed=True)
    assert grown.max() == 2 and grown[10, 14] in (1, 2)
    stack = labels_from_probabilities(np.stack([p, p], axis=1))
    assert stack.shape == (2, 20, 30) and len(np.unique(stack)) == 5


def test_seed_threshold_splits_touching_objects_at_their_cores():
    yy, xx = np.mgrid[:30, :50]
    # two round nuclei (cores 0.95) joined by a bridge of probability 0.75
    p1 = 0.95 * np.exp(-((yy - 15) ** 2 + (xx - 15) ** 2) / 60.0)
    p2 = 0.95 * np.exp(-((yy - 15) ** 2 + (xx - 33) ** 2) / 60.0)
    fg = np.maximum(np.maximum(p1, p2), np.where((abs(yy - 15) < 3) & (xx > 15) & (xx < 33), 0.75, 0))
    p = np.stack([1 - fg, fg]).astype(np.float32)
    assert labels_from_probabilities(p, threshold=0.6).max() == 1  # merged by the bridge
    split = labels_from_probabilities(p, threshold=0.6, seed_threshold=0.9)
    assert split.max() == 2 and split[15, 15] != split[15, 33]
    np.testing.assert_array_equal(split > 0, labels_from_probabilities(p, threshold=0.6) > 0)
    # a seed threshold at or below the threshold changes nothing; small cores are no seeds
    np.testing.assert_array_equal(labels_from_probabilities(p, threshold=0.6, seed_threshold=0.5),
                                  labels_from_probabilities(p, threshold=0.6))
    assert labels_from_probabilities(p, threshold=0.6, seed_threshold=0.9, min_size=200).max() == 1


def test_models_carry_their_postprocessing(tiny_net):
    from napari_unet.inference.postprocess import postprocess_settings

    assert postprocess_settings(tiny_net) == {"threshold": 0.5, "watershed": False, "min_size": 0,
                                              "fill": False, "seed_threshold": None}
    tiny_net.record["postprocess"] = {"threshold": 0.7, "watershed": True, "bogus": 1}
    assert postprocess_settings(tiny_net) == {"threshold": 0.7, "watershed": True, "min_size": 0,
                                              "fill": False, "seed_threshold": None}


def test_postprocess_config_round_trips_the_stored_dict(tiny_net):
    from napari_unet.inference.postprocess import PostprocessConfig

    tiny_net.record["postprocess"] = {"threshold": 0.7, "fill": True, "bogus": 1}
    cfg = PostprocessConfig.for_model(tiny_net)
    assert cfg == PostprocessConfig(threshold=0.7, fill=True)
    assert PostprocessConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.with_changes(threshold=None, min_size=5) == PostprocessConfig(0.7, min_size=5,
                                                                             fill=True)
    assert PostprocessConfig.for_model(object()) == PostprocessConfig()
    p = _cells_probability()
    np.testing.assert_array_equal(cfg.labels(p), labels_from_probabilities(p, **cfg.to_dict()))


def _cells_probability() -> np.ndarray:
    """Three cells tiling a field, 4-px membranes, one tiny spurious blob in a membrane."""
    p = np.full((40, 60), 0.9, np.float32)
    p[:, 18:22] = p[:, 38:42] = 0.1  # membranes at x = 18-21 and 38-41
    p[10:13, 39:41] = 0.6  # an isolated 6-px seed inside the right membrane
    return np.stack([1 - p, p])


def test_fill_partitions_the_image_and_drops_small_seeds():
    p = _cells_probability()
    plain = labels_from_probabilities(p)
    assert plain.max() == 4 and (plain == 0).sum() == 2 * 4 * 40 - 6
    filled = labels_from_probabilities(p, fill=True, min_size=10)
    assert len(np.unique(filled[filled > 0])) == 3
    # each membrane pixel joins a neighbouring cell but for a one-pixel line per membrane
    # (one 0 in each row of it), so the components of the mask are the cells; the small
    # seed is gone
    assert (filled[:, 17:23] == 0).sum(axis=1).tolist() == [1] * 40
    assert (filled == 0).sum() == 2 * 40
    assert cc_label(filled > 0, connectivity=1).max() == 3
    assert set(np.unique(filled[:, :19])) == {filled[0, 0]} and filled[11, 40] in (
        filled[0, 30], filled[0, 50])
    stack = labels_from_probabilities(np.stack([p, p], axis=1), fill=True, min_size=10)
    assert (stack == 0).sum() == 4 * 40 and len(np.unique(stack[stack > 0])) == 6


def test_evaluate_em_scores_partitions_labels_and_probabilities():
    from napari_unet.metrics import evaluate_em

    p = _cells_probability()
    truth = np.zeros((40, 60), np.int32)
    truth[:, :17], truth[:, 23:37], truth[:, 43:] = 1, 2, 3  # a wider true membrane
    filled = labels_from_probabilities(p, fill=True, min_size=10)
    assert evaluate_em(truth, filled)["adapted_rand_error"] == pytest.approx(0.0, abs=1e-9)
    # probabilities are seeded and filled at the best threshold
    assert evaluate_em(truth, p[1])["adapted_rand_error"] < 1e-9
    # thick predicted membranes: the data README's components (0 counts as a segment)
    # pay for them at every threshold, the filled cells do not
    thick = np.full((40, 60), 0.9, np.float32)
    thick[:, 14:26] = thick[:, 34:46] = 0.0
    thin = np.zeros((40, 60), np.int32)
    thin[:, :19], thin[:, 21:39], thin[:, 41:] = 1, 2, 3
    scores = evaluate_em(thin, thick)
    assert scores["adapted_rand_error"] > 0.1 and scores["threshold"] in np.round(np.arange(0.1, 1, 0.1), 1)
    assert scores["adapted_rand_error_fill"] == pytest.approx(0.0, abs=1e-9)
    # a merge of two cells costs
    merged = filled.copy()
    merged[merged == filled[0, 50]] = filled[0, 0]
    assert evaluate_em(truth, merged)["adapted_rand_error"] > 0.2
    with pytest.raises(ValueError, match="shape"):
        evaluate_em(truth, filled[:, :30])


def test_predict_config_and_keywords_are_the_same_options(tiny_net):
    from napari_unet.inference.predict_config import PredictConfig

    img = np.random.default_rng(3).random((50, 60)).astype(np.float32)
    cfg = PredictConfig(device="cpu", tile=40, batch_size=2, precision="fp32", uncertainty=True)
    by_cfg = run(predict_iter(tiny_net, img, cfg))
    by_kw = run(predict_iter(tiny_net, img, device="cpu", tile=40, batch_size=2,
                             precision="fp32", uncertainty=True))
    np.testing.assert_array_equal(by_cfg.probabilities, by_kw.probabilities)
    np.testing.assert_array_equal(by_cfg.uncertainty, by_kw.uncertainty)
    assert run(predict_iter(tiny_net, img, cfg, uncertainty=False)).uncertainty is None  # kw wins
    with pytest.raises(TypeError):
        predict(tiny_net, img, tiles=40)
    with pytest.raises(ValueError, match="tile must be"):
        PredictConfig.merged(cfg, {"tile": 0})


def test_an_empty_slice_of_a_stack_gets_no_noise_objects():
    """Per-image percentiles stretch background noise into ~170 objects a slice (the
    nuclei starter, measured); the stack's range floor keeps it dark, and the other
    slices' predictions do not change."""
    from napari_unet._sample_data import load_nuclei
    from napari_unet.inference.postprocess import labels_from_probabilities, postprocess_settings
    from napari_unet.model_files import builtin_dir, load_model

    model = load_model(builtin_dir() / "nuclei-fluorescence.pt")
    images = load_nuclei()[0][:2]
    empty = np.clip(np.random.default_rng(0).normal(8, 1.5, (1, 256, 256)), 0, 255)
    stack = np.concatenate([images, empty.astype(images.dtype)])

    def objects(share: float) -> tuple[list[int], np.ndarray]:
        probs = predict(model, stack, device="cpu", precision="fp32", stack_floor=share)
        counts = [int(labels_from_probabilities(probs[:, z], **postprocess_settings(model)).max())
                  for z in range(3)]
        return counts, probs

    (alone, p_alone), (floored, p_floor) = objects(0.0), objects(0.25)
    assert alone[2] > 20 and floored[2] <= 1
    np.testing.assert_allclose(p_floor[:, :2], p_alone[:, :2], atol=1e-6)
    with pytest.raises(ValueError, match="stack_floor"):
        predict(model, stack, stack_floor=2.0)
