import json
import subprocess
import sys

import numpy as np
import tifffile

from napari_unet.cli import main
from napari_unet.io import load_model, save_model
from napari_unet.weights import border_weight_map


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
               "--device", "cpu", "--expand-labels", "2", "-o", str(tmp_path / "m.pt")])
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


def test_train_recalibrates_filling_models_on_uncorrected_slices(tmp_path, blobs, tiny_net, capsys):
    from napari_unet.calibrate import THRESHOLDS

    img, lab = blobs
    tifffile.imwrite(tmp_path / "img.tif", np.stack([img, img, img]))
    tifffile.imwrite(tmp_path / "lab.tif", np.stack([lab, np.zeros_like(lab), np.zeros_like(lab)]))
    tiny_net.record["postprocess"] = {"threshold": 0.3, "fill": True}
    start = save_model(tiny_net, tmp_path / "start.pt")
    assert main(["train", "--images", str(tmp_path / "img.tif"), "--labels",
                 str(tmp_path / "lab.tif"), "--model", str(start), "--steps", "1", "--tile", "32",
                 "--device", "cpu", "-o", str(tmp_path / "m.pt")]) == 0
    assert "recalibrated on 2 uncorrected slices" in capsys.readouterr().out
    assert load_model(tmp_path / "m.pt").record["anchor_slices"] == 2  # and anchored it
    assert main(["train", "--images", str(tmp_path / "img.tif"), "--labels",
                 str(tmp_path / "lab.tif"), "--model", str(start), "--steps", "1", "--tile", "32",
                 "--device", "cpu", "--anchor-weight", "0", "-o", str(tmp_path / "m0.pt")]) == 0
    assert load_model(tmp_path / "m0.pt").record["anchor_slices"] == 0
    pp = load_model(tmp_path / "m.pt").record["postprocess"]
    assert pp["fill"] is True and pp["threshold"] in THRESHOLDS
