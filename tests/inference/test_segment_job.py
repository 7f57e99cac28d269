"""The Segment job without napari (napari_unet.inference.segment_job)."""

import numpy as np

from napari_unet.inference.postprocess import PostprocessConfig
from napari_unet.inference.predict_config import PredictConfig
from napari_unet.inference.segment_job import SegmentRequest, next_slice_to_correct, segment_iter
from napari_unet.jobs import run
from napari_unet.model_versions import ModelVersion


def test_next_slice_to_correct_is_the_most_uncertain_unmarked_predicted_one():
    u = np.zeros((5, 4, 4), np.float32)
    u[1], u[3], u[4] = 0.2, 0.9, 0.5
    assert next_slice_to_correct(u, predicted=[0, 1, 3, 4], corrected=[]) == 3
    assert next_slice_to_correct(u, predicted=[0, 1, 3, 4], corrected=[3]) == 4
    assert next_slice_to_correct(u, predicted=[0, 1, 2], corrected=[]) == 1  # 3 not predicted
    assert next_slice_to_correct(u, predicted=[3, 9], corrected=[3]) is None  # 9: out of range
    assert next_slice_to_correct(u[3], predicted=[0], corrected=[]) == 0  # 2D


def test_segment_iter_labels_each_predicted_slice_with_unique_ids(tiny_net):
    version = ModelVersion("tiny", "new", _model=tiny_net)
    stack = np.random.default_rng(0).random((3, 40, 40)).astype(np.float32)
    events = []
    out = run(segment_iter(version, SegmentRequest(
        stack, slices=[0, 2], predict=PredictConfig(device="cpu", uncertainty=True),
        postprocess=PostprocessConfig(threshold=0.0))),
              events.append)
    assert out.is_stack and out.slices == [0, 2] and out.stack is None
    assert sorted(out.labels) == sorted(out.foreground) == sorted(out.uncertainty) == [0, 2]
    assert all(out.labels[z].shape == (40, 40) and out.labels[z].dtype == np.int32 for z in (0, 2))
    ids = [set(np.unique(out.labels[z])) - {0} for z in (0, 2)]
    assert ids[0] and ids[1] and not ids[0] & ids[1]  # threshold 0: everything is an object
    assert "post-processed slice 2" in [e.message for e in events]
    whole = run(segment_iter(version, SegmentRequest(stack, predict=PredictConfig(device="cpu"))))
    assert whole.stack.shape == (3, 40, 40) and whole.stacks["foreground"].shape == (3, 40, 40)
    assert not whole.uncertainty and whole.uncertainty_max == 0.0
