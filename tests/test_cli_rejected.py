"""``napari-unet train`` writes the model to keep: the parent when the self-check rejects."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch

from napari_unet.cli import main
from napari_unet.model_files import load_model, save_model
from napari_unet.training import loop
from napari_unet.training.selfcheck import CheckResult


@pytest.fixture
def rejecting_check(monkeypatch):
    """Every comparison on the held-back blocks says: the new model is no better."""
    def no_better(*args, **kwargs):
        yield from ()
        return CheckResult("F1", 0.8, 0.7, False, {"threshold": 0.5})

    monkeypatch.setattr(loop, "score_blocks", no_better)


def _files(tmp_path, blobs, tiny_net):
    img, lab = blobs
    tifffile.imwrite(tmp_path / "img.tif", np.stack([img, img, img]))
    tifffile.imwrite(tmp_path / "lab.tif", np.stack([lab, np.zeros_like(lab), np.zeros_like(lab)]))
    tiny_net.record.update({"name": "start", "description": "the starter's text"})
    start = save_model(tiny_net, tmp_path / "start.pt")
    return ["train", "--images", str(tmp_path / "img.tif"), "--labels", str(tmp_path / "lab.tif"),
            "--model", str(start), "--steps", "3", "--tile", "32", "--device", "cpu",
            "--polarity", "keep", "--scale", "keep", "--smoothing", "keep"]


def _same(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_rejected_round_writes_the_parents_weights_and_says_so(tmp_path, blobs, tiny_net,
                                                                 capsys, rejecting_check):
    args = _files(tmp_path, blobs, tiny_net)
    assert main([*args, "-o", str(tmp_path / "m.pt")]) == 0
    err = capsys.readouterr().err
    kept, start = load_model(tmp_path / "m.pt"), load_model(tmp_path / "start.pt")
    assert _same(kept, start) and kept.record["description"] == "the starter's text"
    assert kept.record["history"][-1]["rejected"] is True
    assert "holds" in err and "--write-rejected" in err


def test_write_rejected_writes_the_trained_weights_with_a_warning(tmp_path, blobs, tiny_net,
                                                                  capsys, rejecting_check):
    args = _files(tmp_path, blobs, tiny_net)
    assert main([*args, "--write-rejected", "-o", str(tmp_path / "m.pt")]) == 0
    err = capsys.readouterr().err
    trained, start = load_model(tmp_path / "m.pt"), load_model(tmp_path / "start.pt")
    assert not _same(trained, start)
    assert trained.record["description"].startswith("Fine-tuned from start")
    assert "WARNING: the new model is not better" in err
