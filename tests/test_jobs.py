"""One event protocol (napari_unet.jobs): every event of every job has a message and a fraction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_unet.inference.predict import Progress, predict_iter
from napari_unet.inference.predict_config import PredictConfig
from napari_unet.inference.rescale import object_diameter
from napari_unet.inference.segment_job import SegmentRequest, segment_iter
from napari_unet.jobs import Event, Stage, run
from napari_unet.model import UNet
from napari_unet.model_versions import ModelVersion
from napari_unet.training.finetune_jobs import annotated_iter, preview_iter
from napari_unet.training.loop import RoundConfig, finetune_round
from napari_unet.training.train import TrainConfig, TrainEvent
from napari_unet.training.weight_maps import weights_iter


def _events(gen) -> list:
    """Every event of ``gen``, each checked against the protocol."""
    seen: list = []

    def check(ev) -> None:
        assert isinstance(ev, Event), f"{ev!r} is not an Event"
        assert isinstance(ev.message, str) and ev.message.strip() and "\n" not in ev.message
        assert ev.fraction is None or (isinstance(ev.fraction, float) and 0 <= ev.fraction <= 1), ev
        seen.append(ev)

    run(gen, check)
    return seen


def _stack(blobs) -> tuple[np.ndarray, np.ndarray]:
    img, lab = blobs
    return np.stack([img, img[::-1], img[:, ::-1]]), np.stack([lab, lab[::-1], lab[:, ::-1]])


def test_every_event_of_a_round_satisfies_the_protocol(blobs, monkeypatch):
    from napari_unet.training import loop

    img, lab = _stack(blobs)
    torch.manual_seed(0)
    parent = UNet(depth=2, base_channels=8)
    parent.record.update(name="parent", object_diameter=object_diameter([lab[0]]) / 2)
    monkeypatch.setattr(loop, "parent_quality", lambda *a, **k: 0.95)  # a good parent: anchors
    cfg = RoundConfig(train=TrainConfig(steps=2, tile=48, batch_size=1, device="cpu", amp=False))
    events = _events(finetune_round(parent, img, lab, cfg, slices=[0], anchors=[img[1]]))
    kinds = {type(e) for e in events}
    assert kinds == {Stage, TrainEvent}
    messages = " | ".join(e.message for e in events if isinstance(e, Stage))
    for words in ("checking parent", "polarity", "input scale", "anchoring", "training 2 steps",
                  "predicting slice 1/1", "checking held-back part 1/1", "re-tuning"):
        assert words in messages, words
    steps = [e for e in events if isinstance(e, TrainEvent)]
    assert [e.fraction for e in steps] == [0.5, 1.0] and steps[0].message.startswith("step 1/2: loss")


def test_every_event_of_a_prediction_and_a_segmentation_satisfies_the_protocol(tiny_net, blobs):
    img, lab = _stack(blobs)
    events = _events(predict_iter(tiny_net, img, precision="fp32"))
    assert events and all(isinstance(e, Progress) for e in events)
    assert events[-1].fraction == 1.0 and events[0].message.startswith("slice 0: tile 1/")
    rgb = np.repeat(img[0][..., None], 3, axis=-1)  # a colour image for a 1-channel model
    for image in (img, rgb):
        req = SegmentRequest(image, predict=PredictConfig(device="cpu", precision="fp32"))
        events = _events(segment_iter(ModelVersion("tiny", "new", _model=tiny_net), req))
        stages = [e.message for e in events if isinstance(e, Stage)]
        assert any(isinstance(e, Progress) for e in events) and "post-processed slice 0" in stages
    assert "converted to gray" in stages[0]


@pytest.mark.parametrize("job", ["weights", "preview", "scan"])
def test_the_docks_small_jobs_yield_stages(blobs, job):
    img, lab = blobs
    gen = {"weights": lambda: weights_iter(lab, 10.0, 5.0, True, None),
           "preview": lambda: preview_iter(img, lab, None, 0),
           "scan": lambda: annotated_iter(np.stack([lab, 0 * lab, lab]))}[job]()
    events = _events(gen)
    assert events and all(isinstance(e, Stage) for e in events)
