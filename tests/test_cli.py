import json
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from napari_unet.cli import main
from napari_unet.model_files import load_model, save_model
from napari_unet.training.border_weights import border_weight_map


def test_help_lists_subcommands():
    out = subprocess.run([sys.executable, "-m", "napari_unet.cli", "--help"],
                         capture_output=True, text=True, check=True).stdout
    for cmd in ("predict", "weights", "train", "models", "evaluate"):
        assert cmd in out


def test_train_predict_evaluate_roundtrip(tmp_path, blobs, tiny_net, capsys):
    img, lab = blobs
    tifffile.imwrite(tmp_path / "img.tif", np.stack([img, img]))
    tifffile.imwrite(tmp_path / "lab.tif", np.stack([lab, np.zeros_like(lab)]))
    start = save_model(tiny_net, tmp_path / "start.pt")
    rc = main(["train", "--images", str(tmp_path / "img.tif"), "--labels",
               str(tmp_path / "lab.tif"), "--model", str(start), "--steps", "2", "--tile", "32",
               "--device", "cpu", "--expand-labels", "2", "--write-rejected", "-o",
               str(tmp_path / "m.pt")])
    assert rc == 0 and load_model(tmp_path / "m.pt").record["steps"] == 2
    assert load_model(tmp_path / "m.pt").record["expand_labels"] == 2
    ck = tmp_path / "ck.pt"
    rc = main(["train", "--images", str(tmp_path / "img.tif"), "--labels",
               str(tmp_path / "lab.tif"), "--model", str(start), "--steps", "1", "--tile", "32",
               "--device", "cpu", "--checkpoint", str(ck), "-o", str(tmp_path / "m1.pt")])
    rc = main(["train", "--images", str(tmp_path / "img.tif"), "--labels",
               str(tmp_path / "lab.tif"), "--resume", str(ck), "--steps", "2", "--tile", "32",
               "--device", "cpu", "-o", str(tmp_path / "m2.pt")])
    assert rc == 0 and load_model(tmp_path / "m2.pt").config == tiny_net.config
    rc = main(["predict", str(tmp_path / "img.tif"), "-o", str(tmp_path / "pred.tif"),
               "--model", str(tmp_path / "m.pt"), "--slices", "0", "--precision", "fp32",
               "--probabilities", str(tmp_path / "p.tif")])
    assert rc == 0
    pred = tifffile.imread(tmp_path / "pred.tif")
    assert pred.shape == (2, 96, 96) and pred.dtype == np.uint16
    assert tifffile.imread(tmp_path / "p.tif").shape == (2, 2, 96, 96)
    # a model that recommends TTA gets it by default; --no-tta switches it off
    tta_model = load_model(tmp_path / "m.pt")
    tta_model.record["predict"] = {"tta": True}
    save_model(tta_model, tmp_path / "m_tta.pt")
    for flag, name in ((None, "auto"), ("--tta", "on"), ("--no-tta", "off")):
        assert main(["predict", str(tmp_path / "img.tif"), "-o", str(tmp_path / f"{name}.tif"),
                     "--model", str(tmp_path / "m_tta.pt"), "--slices", "0", "--precision",
                     "fp32", "--probabilities", str(tmp_path / f"p_{name}.tif"),
                     *([flag] if flag else [])]) == 0
    p_auto, p_on, p_off = (tifffile.imread(tmp_path / f"p_{n}.tif") for n in ("auto", "on", "off"))
    np.testing.assert_allclose(p_auto, p_on, atol=1e-6)
    assert np.abs(p_auto - p_off).max() > 1e-4
    # --fill partitions the slice (every pixel labelled but the one-pixel lines between
    # cells), overriding the model's setting
    assert main(["predict", str(tmp_path / "img.tif"), "-o", str(tmp_path / "fill.tif"),
                 "--model", str(tmp_path / "m.pt"), "--slices", "0", "--threshold", "0.01",
                 "--fill"]) == 0
    filled = tifffile.imread(tmp_path / "fill.tif")
    assert (filled[0] > 0).mean() > 0.9 and not filled[1].any()
    capsys.readouterr()
    assert main(["evaluate", "--truth", str(tmp_path / "lab.tif"), "--pred",
                 str(tmp_path / "lab.tif")]) == 0
    assert json.loads(capsys.readouterr().out)["f1"] == 1.0


def test_weights_command_matches_core(tmp_path, blobs):
    _, lab = blobs
    tifffile.imwrite(tmp_path / "lab.tif", lab)
    assert main(["weights", str(tmp_path / "lab.tif"), "-o", str(tmp_path / "w.tif"),
                 "--sigma", "4", "--d1", str(tmp_path / "d1.tif")]) == 0
    np.testing.assert_allclose(tifffile.imread(tmp_path / "w.tif"),
                               border_weight_map(lab, sigma=4.0))
    assert tifffile.imread(tmp_path / "d1.tif").shape == lab.shape


def test_errors_are_clear_and_nonzero(tmp_path, capsys, tiny_net):
    assert main(["predict", str(tmp_path / "nope.tif"), "-o", str(tmp_path / "o.tif"),
                 "--model", str(save_model(tiny_net, tmp_path / "m.pt"))]) == 2
    assert "no such file" in capsys.readouterr().err
    tifffile.imwrite(tmp_path / "rgb4d.tif", np.zeros((2, 3, 8, 8, 2), np.uint8))
    assert main(["predict", str(tmp_path / "rgb4d.tif"), "-o", str(tmp_path / "o.tif"),
                 "--model", str(tmp_path / "m.pt")]) == 2
    assert "channel" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "rgb4d.tif"), "-o", str(tmp_path / "o.tif"),
                 "--model", "no-such-model"]) == 2
    assert "no model file or built-in model" in capsys.readouterr().err


def test_train_runs_one_checked_round_and_describes_the_new_model(tmp_path, blobs, tiny_net,
                                                                 capsys):
    img, lab = blobs
    tifffile.imwrite(tmp_path / "img.tif", np.stack([img, img, img]))
    tifffile.imwrite(tmp_path / "lab.tif", np.stack([lab, np.zeros_like(lab), np.zeros_like(lab)]))
    tiny_net.record.update({"name": "start", "description": "the starter's text",
                            "metrics": {"dev_twin_test_f1": 0.9}})
    start = save_model(tiny_net, tmp_path / "start.pt")
    assert main(["train", "--images", str(tmp_path / "img.tif"), "--labels",
                 str(tmp_path / "lab.tif"), "--model", str(start), "--steps", "2", "--tile", "32",
                 "--device", "cpu", "--write-rejected", "-o", str(tmp_path / "m.pt")]) == 0
    out = capsys.readouterr()
    assert "self-check on held-back parts of your corrections: F1" in out.out
    rec = load_model(tmp_path / "m.pt").record
    assert rec["parent"] == "start" and rec["description"].startswith("Fine-tuned from start")
    assert "dev_twin_test_f1" not in rec["metrics"] and rec["self_check"]["steps"] == 2
    assert rec["self_check"]["scale"] == 1.0  # the start model records no object size
    if not rec["self_check"]["accepted"]:
        assert "WARNING: the new model is not better" in out.err


def test_colour_images_work_end_to_end_in_the_cli(tmp_path, blobs, tiny_net, capsys):
    img, lab = blobs
    rgb = np.stack([img, img // 2, np.zeros_like(img)], axis=-1)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb)
    tifffile.imwrite(tmp_path / "lab.tif", lab)
    start = save_model(tiny_net, tmp_path / "start.pt")
    assert main(["train", "--images", str(tmp_path / "rgb.tif"), "--labels",
                 str(tmp_path / "lab.tif"), "--model", str(start), "--steps", "1", "--tile", "32",
                 "--device", "cpu", "-o", str(tmp_path / "m.pt")]) == 0
    assert main(["predict", str(tmp_path / "rgb.tif"), "-o", str(tmp_path / "p.tif"),
                 "--model", str(tmp_path / "m.pt")]) == 0
    assert tifffile.imread(tmp_path / "p.tif").shape == (96, 96)
    chw = np.moveaxis(rgb, -1, 0)
    tifffile.imwrite(tmp_path / "chw.tif", chw)
    assert main(["predict", str(tmp_path / "chw.tif"), "-o", str(tmp_path / "p0.tif"),
                 "--model", str(tmp_path / "m.pt"), "--channel-axis", "0", "--channel", "0"]) == 0
    assert tifffile.imread(tmp_path / "p0.tif").shape == (96, 96)
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "chw.tif"), "-o", str(tmp_path / "p9.tif"),
                 "--model", str(tmp_path / "m.pt"), "--channel-axis", "0", "--channel", "9"]) == 2
    assert "channel 9 is out of range" in capsys.readouterr().err


def test_a_uint16_rgb_stack_trains_and_predicts_without_a_channel_axis(tmp_path, blobs,
                                                                      tiny_net):
    """The evaluation's "stack of RGB images": ``(Z, Y, X, 3)`` with labels on one slice."""
    img, lab = blobs
    rgb = (np.stack([img, img // 2, np.zeros_like(img)], axis=-1).astype(np.uint16) * 257)
    stack = np.stack([rgb, rgb[::-1], rgb[:, ::-1]])
    labels = np.zeros(stack.shape[:3], np.uint16)
    labels[0] = lab
    tifffile.imwrite(tmp_path / "stack.tif", stack, photometric="rgb")
    tifffile.imwrite(tmp_path / "labels.tif", labels)
    start = save_model(tiny_net, tmp_path / "start.pt")
    assert main(["train", "--images", str(tmp_path / "stack.tif"), "--labels",
                 str(tmp_path / "labels.tif"), "--slices", "0", "--model", str(start),
                 "--steps", "1", "--tile", "32", "--device", "cpu",
                 "-o", str(tmp_path / "m.pt")]) == 0
    assert main(["predict", str(tmp_path / "stack.tif"), "-o", str(tmp_path / "p.tif"),
                 "--model", str(tmp_path / "m.pt"), "--device", "cpu"]) == 0
    assert tifffile.imread(tmp_path / "p.tif").shape == (3, 96, 96)


@pytest.mark.parametrize("flags, message", [
    (["--steps", "0"], "--steps must be at least 1"),
    (["--lr", "nan"], "--lr must be a finite number"),
    (["--lr", "0"], "--lr must be above 0"),
    (["--anchor-weight", "nan"], "--anchor-weight must be a finite number"),
    (["--tile", "-5"], "--tile must be between"),
    (["--holdout", "1.5"], "holdout must be in [0, 1)"),
    (["--scale", "big"], "scale must be 'auto', 'keep' or a number"),
    (["--scale", "50"], "scale must be in [0.1, 10]"),
])
def test_train_refuses_nonsense_before_any_work(tmp_path, blobs, tiny_net, capsys, flags, message):
    img, lab = blobs
    tifffile.imwrite(tmp_path / "img.tif", img)
    tifffile.imwrite(tmp_path / "lab.tif", lab)
    start = save_model(tiny_net, tmp_path / "start.pt")
    assert main(["train", "--images", str(tmp_path / "img.tif"), "--labels",
                 str(tmp_path / "lab.tif"), "--model", str(start), "--device", "cpu",
                 "-o", str(tmp_path / "m.pt"), *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "m.pt").exists()


def test_train_takes_several_images_as_pairs_or_folders(tmp_path, blobs, tiny_net, capsys):
    img, lab = blobs
    (tmp_path / "im").mkdir()
    (tmp_path / "lb").mkdir()
    tifffile.imwrite(tmp_path / "im" / "a.tif", img)
    tifffile.imwrite(tmp_path / "im" / "b.tif", np.stack([img[::-1], img]))  # a stack
    tifffile.imwrite(tmp_path / "lb" / "a_labels.tif", lab)
    tifffile.imwrite(tmp_path / "lb" / "b.tif", np.stack([lab[::-1], np.zeros_like(lab)]))
    start = save_model(tiny_net, tmp_path / "start.pt")
    common = ["--model", str(start), "--steps", "1", "--tile", "32", "--device", "cpu"]
    assert main(["train", "--images", str(tmp_path / "im"), "--labels", str(tmp_path / "lb"),
                 *common, "-o", str(tmp_path / "m.pt")]) == 0
    rec = load_model(tmp_path / "m.pt").record
    assert rec["data"] == "2 corrected slice(s) of 2 images: a.tif, b.tif[0]"
    assert rec["anchor_slices"] in (0, 1)  # b.tif[1] is the one uncorrected slice
    # the same as explicit pairs; a count mismatch and --slices are refused before any work
    assert main(["train", "--images", str(tmp_path / "im" / "a.tif"),
                 str(tmp_path / "im" / "b.tif"), "--labels", str(tmp_path / "lb" / "a_labels.tif"),
                 str(tmp_path / "lb" / "b.tif"), *common, "-o", str(tmp_path / "m2.pt")]) == 0
    capsys.readouterr()
    for bad, said in (([str(tmp_path / "lb" / "b.tif")], "one labels file per image"),
                      ([str(tmp_path / "lb" / "a_labels.tif"), str(tmp_path / "lb" / "b.tif"),
                        "--slices", "0"], "--slices needs one")):
        assert main(["train", "--images", str(tmp_path / "im" / "a.tif"),
                     str(tmp_path / "im" / "b.tif"), "--labels", *bad, *common,
                     "-o", str(tmp_path / "m3.pt")]) != 0
        assert said in capsys.readouterr().err
    assert not (tmp_path / "m3.pt").exists()
    (tmp_path / "lb" / "a_labels.tif").rename(tmp_path / "lb" / "x.tif")
    assert main(["train", "--images", str(tmp_path / "im"), "--labels", str(tmp_path / "lb"),
                 *common, "-o", str(tmp_path / "m4.pt")]) != 0
    assert "no labels file matches a.tif" in capsys.readouterr().err
