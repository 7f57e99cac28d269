import copy

import numpy as np
import pytest
import torch

from napari_unet.model import UNet
from napari_unet.model_files import load_checkpoint, load_model, save_model
from napari_unet.training.augment import AugmentConfig
from napari_unet.training.train import TrainConfig, annotated_slices, fine_tune, weighted_loss


def stack(blobs, z=3):
    img, lab = blobs
    imgs = np.stack([img] * z)
    labs = np.zeros((z,) + lab.shape, lab.dtype)
    labs[1] = lab
    return imgs, labs


def cfg(**kw):
    base = dict(steps=3, tile=32, lr=1e-3, device="cpu", augment=AugmentConfig(enabled=False))
    return TrainConfig(**{**base, **kw})


def drive(gen):
    events = []
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            return events, stop.value


def test_fine_tune_yields_steps_and_changes_only_the_model(tiny_net, blobs):
    imgs, labs = stack(blobs)
    imgs0, labs0 = imgs.copy(), labs.copy()
    before = copy.deepcopy(tiny_net.state_dict())
    events, model = drive(fine_tune(tiny_net, imgs, labs, cfg()))
    assert [e.step for e in events] == [1, 2, 3] and model is tiny_net
    assert all(np.isfinite(e.loss) for e in events)
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    np.testing.assert_array_equal(imgs, imgs0)
    np.testing.assert_array_equal(labs, labs0)
    assert model.record["annotated_slices"] == [1] and model.record["steps"] == 3
    assert model.record["data_shapes"] == [[96, 96]]


def test_loss_decreases_with_augmentation(blobs):
    torch.manual_seed(0)
    net = UNet(depth=2, base_channels=8, normalization={"mode": "none"})
    img, lab = blobs
    events, _ = drive(fine_tune(net, img / 255.0, lab, cfg(steps=40, optimizer="adam",
                                                          augment=AugmentConfig())))
    losses = [e.loss for e in events]
    assert np.mean(losses[-8:]) < np.mean(losses[:8])


@pytest.mark.parametrize(("amx", "avx512_bf16", "fast"), [
    (False, False, False), (True, False, True), (False, True, True)])
def test_fast_bf16_means_amx_or_avx512_bf16(monkeypatch, amx, avx512_bf16, fast):
    from napari_unet import devices

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16,
                        raising=False)
    assert devices.cpu_has_fast_bf16() is fast

    def broken() -> bool:
        raise RuntimeError("unusual build")

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", broken, raising=False)
    assert devices.cpu_has_fast_bf16() is avx512_bf16  # a failing probe counts as "no"


@pytest.mark.parametrize("fast_bf16", [False, True])
def test_cpu_training_precision_follows_the_hardware(tiny_net, blobs, monkeypatch, fast_bf16):
    from napari_unet import devices

    monkeypatch.setattr(devices, "cpu_has_fast_bf16", lambda: fast_bf16)
    cpu = torch.device("cpu")
    assert devices.training_dtype(cpu) == (torch.bfloat16 if fast_bf16 else None)
    seen = []
    tiny_net.head.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    events, model = drive(fine_tune(tiny_net, *stack(blobs), cfg(steps=2)))
    assert seen == [torch.bfloat16 if fast_bf16 else torch.float32] * 2
    assert all(np.isfinite(e.loss) for e in events)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32
    drive(fine_tune(tiny_net, *stack(blobs), cfg(steps=1, amp=False)))
    assert seen[-1] == torch.float32  # amp=False always trains in fp32


def test_cancel_keeps_last_completed_step(tiny_net, blobs):
    imgs, labs = stack(blobs)
    gen = fine_tune(tiny_net, imgs, labs, cfg(steps=50, freeze="input"))
    for ev in gen:
        if ev.step == 2:
            break
    gen.close()
    assert tiny_net.record["steps"] == 2
    assert all(p.requires_grad for p in tiny_net.parameters()) and not tiny_net.training


def test_checkpoint_and_resume(tiny_net, blobs, tmp_path):
    imgs, labs = stack(blobs)
    ck = tmp_path / "ck.pt"
    drive(fine_tune(tiny_net, imgs, labs, cfg(steps=2, checkpoint_path=str(ck))))
    state = load_checkpoint(ck)
    assert state["step"] == 2 and "optimizer" in state
    events, _ = drive(fine_tune(tiny_net, imgs, labs, cfg(steps=4), resume=str(ck)))
    assert [e.step for e in events] == [3, 4]


def test_ignore_label_weighs_zero_and_annotated_slices():
    lab = np.full((2, 10, 10), 7)
    lab[1, 2:5, 2:5] = 1
    lab[1, 6:, 6:] = 0
    assert annotated_slices(lab, ignore_label=7) == [1]
    assert annotated_slices(np.zeros((3, 4, 4))) == []


def test_weighted_loss_crops_targets_to_output():
    logits = torch.zeros(1, 2, 4, 4)
    target = torch.zeros(1, 8, 8, dtype=torch.long)
    weight = torch.zeros(1, 8, 8)
    weight[:, 2:6, 2:6] = 2.0
    assert weighted_loss(logits, target, weight).item() == pytest.approx(2 * np.log(2), rel=1e-5)


@pytest.mark.parametrize(
    "case, match",
    [("shape", "shape"), ("empty", "no annotated"), ("oneclass", "one class"), ("nan", "NaN"),
     ("channels", "channel")],
)
def test_bad_input_gets_a_clear_error(tiny_net, blobs, case, match):
    imgs, labs = stack(blobs)
    imgs = imgs.astype(np.float32)
    model = tiny_net
    if case == "shape":
        labs = labs[:, :50]
    elif case == "empty":
        labs = np.zeros_like(labs)
    elif case == "oneclass":
        labs = np.zeros_like(labs)
        labs[1] = 1
    elif case == "nan":
        imgs[1, 3, 3] = np.nan
    elif case == "channels":
        model = UNet(depth=2, base_channels=4, in_channels=2)
    before = (imgs.copy(), labs.copy())
    with pytest.raises(ValueError, match=match):
        next(fine_tune(model, imgs, labs, cfg()))
    np.testing.assert_array_equal(imgs, before[0])
    np.testing.assert_array_equal(labs, before[1])


def test_model_file_roundtrip_is_safe_and_atomic(tiny_net, tmp_path, monkeypatch):
    tiny_net.record["name"] = "v1"
    path = save_model(tiny_net, tmp_path / "m.pt")
    loaded = load_model(path)
    for k, v in tiny_net.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])
    assert loaded.config == tiny_net.config and loaded.record["name"] == "v1"
    assert "package_version" in loaded.record and "date" in loaded.record
    half = load_model(save_model(tiny_net, tmp_path / "h.pt", half=True))
    w = next(iter(half.state_dict().values()))
    assert w.dtype == torch.float32

    # a crash mid-save leaves the previous file intact
    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("torch.save", boom)
    with pytest.raises(OSError):
        save_model(UNet(depth=2, base_channels=2), path)
    assert load_model(path).config == tiny_net.config
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_hostile_file_is_refused(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    bad = tmp_path / "evil.pt"
    bad.write_bytes(pickle.dumps({"format": "napari-unet/model-v1", "x": Evil()}))
    with pytest.raises(ValueError, match="cannot read"):
        load_model(bad)
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.pt")


def test_lists_of_images_of_different_sizes(tiny_net, blobs):
    img, lab = blobs
    events, model = drive(fine_tune(tiny_net, [img, img[:60, :70]], [lab, lab[:60, :70]], cfg()))
    assert len(events) == 3 and model.record["annotated_slices"] == [0, 1]
    assert model.record["data_shapes"] == [[96, 96], [60, 70]]


def test_numpy_values_in_the_record_still_load_safely(tiny_net, tmp_path):
    tiny_net.record["metrics"] = {"f1": np.float64(0.9), "n": np.int64(3), "pair": (1, 2)}
    loaded = load_model(save_model(tiny_net, tmp_path / "m.pt"))
    assert loaded.record["metrics"] == {"f1": 0.9, "n": 3, "pair": [1, 2]}


def test_expanded_targets_leave_thin_closed_lines_between_cells():
    from napari_unet.training.border_weights import training_targets

    cells = np.zeros((30, 40), np.int32)
    cells[:, :15], cells[:, 25:] = 1, 2  # a 10-px membrane between two cells
    cells[:, 36:] = 0  # and a membrane at the right edge with no cell beyond it
    plain, _ = training_targets(cells)
    thin, weight = training_targets(cells, expand_labels=12)
    assert (plain[0] == 0).sum() == 10 + 4
    # the cells grow into the membranes until they meet: one line of background between
    # them (the separation border), every row of it closed; the edge membrane is gone
    assert 1 <= (thin[0] == 0).sum() <= 2 and (thin == 0).sum(axis=1).min() >= 1
    assert (thin[:, 36:] == 1).all() and (weight > 0).all()
    # ignored pixels stay ignored (weight 0) and are not grown into
    part = np.where(np.arange(40) < 30, cells, 9)
    t, w = training_targets(part, ignore_label=9, expand_labels=12)
    assert (w[:, 30:] == 0).all() and (t[:, 30:] == 0).all() and (w[:, :30] > 0).all()


def test_fine_tuning_keeps_the_models_target_expansion(tiny_net, blobs):
    img, lab = blobs
    drive(fine_tune(tiny_net, img, lab, cfg(expand_labels=3)))
    assert tiny_net.record["expand_labels"] == 3
    drive(fine_tune(tiny_net, img, lab, cfg()))  # None: the model's own setting
    assert tiny_net.record["expand_labels"] == 3
    drive(fine_tune(tiny_net, img, lab, cfg(expand_labels=0)))
    assert tiny_net.record["expand_labels"] == 0
    with pytest.raises(ValueError, match="expand_labels"):
        drive(fine_tune(tiny_net, img, lab, cfg(expand_labels=-1)))


@pytest.mark.parametrize("freeze, frozen", [("input", ["inc"]), ("encoder", ["inc", "downs"])])
def test_frozen_layers_keep_their_weights_and_learn_again_later(tiny_net, blobs, freeze, frozen):
    imgs, labs = stack(blobs)
    before = copy.deepcopy(tiny_net.state_dict())
    drive(fine_tune(tiny_net, imgs, labs, cfg(freeze=freeze)))
    after = copy.deepcopy(tiny_net.state_dict())
    moved = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert moved and not moved & set(frozen)
    assert all(p.requires_grad for p in tiny_net.parameters())
    drive(fine_tune(tiny_net, imgs, labs, cfg()))
    assert "inc" in {k.split(".")[0] for k, v in tiny_net.state_dict().items()
                     if not torch.equal(after[k], v)}


def test_unknown_freeze_is_refused():
    with pytest.raises(ValueError, match="freeze must be one of none, input, encoder"):
        TrainConfig(freeze="decoder")


def test_weight_average_is_the_mean_of_the_last_steps(tiny_net, blobs):
    imgs, labs = stack(blobs)
    plain = copy.deepcopy(tiny_net)
    trajectory = []
    gen = fine_tune(plain, imgs, labs, cfg(steps=6, lr=1e-2))
    for _ in gen:
        trajectory.append([p.detach().clone() for p in plain.parameters()])
    _, averaged = drive(fine_tune(tiny_net, imgs, labs, cfg(steps=6, lr=1e-2, average=0.5)))
    params = [p.detach() for p in averaged.parameters()]
    for i, p in enumerate(params):  # the last 3 of 6 steps, the same path
        torch.testing.assert_close(p, torch.stack([t[i] for t in trajectory[3:]]).mean(0))
    assert any(not torch.equal(p, t) for p, t in zip(params, trajectory[-1], strict=True))
    with pytest.raises(ValueError, match="average"):
        cfg(average=1.5)
