"""Segment dock: docks open from the manifest, real worker path, corrected slices, next slice."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")

from napari.utils.notifications import NotificationSeverity, notification_manager  # noqa: E402

from napari_unet._qt.finetune import FineTuneWidget  # noqa: E402
from napari_unet._qt.segment import SegmentWidget  # noqa: E402
from napari_unet._qt.session import get_session  # noqa: E402
from napari_unet._qt.weights import BorderWeightsWidget  # noqa: E402
from napari_unet.inference.segment_job import next_slice_to_correct  # noqa: E402
from napari_unet.model import UNet  # noqa: E402
from tests.conftest import wait_finished  # noqa: E402

TIMEOUT = 120_000


pytestmark = pytest.mark.usefixtures("tiny_session")


def _segment_dock(viewer):
    viewer.open_sample("napari-unet", "nuclei")
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet", "Segment")
    widget.image_combo.set_layer("nuclei")
    widget.device_combo.setCurrentText("cpu")
    return widget


@pytest.mark.parametrize(
    ("name", "cls"),
    [("Segment", SegmentWidget), ("Border weights", BorderWeightsWidget),
     ("Fine-tune", FineTuneWidget)],
)
def test_dock_opens_from_manifest(make_napari_viewer, name, cls):
    viewer = make_napari_viewer()
    dock, widget = viewer.window.add_plugin_dock_widget("napari-unet", name)
    assert isinstance(widget, cls)
    assert dock is not None


def test_segment_current_slice_fills_labels(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = _segment_dock(viewer)
    widget.scope_combo.setCurrentText("current slice")
    widget.prob_check.setChecked(True)
    viewer.dims.set_current_step(0, 2)
    worker = widget.run()
    with qtbot.waitSignals([worker.returned, worker.finished], timeout=TIMEOUT):
        pass
    labels = viewer.layers["nuclei labels"]
    assert labels.data.shape == (4, 256, 256)
    assert np.issubdtype(labels.data.dtype, np.integer)
    prob = viewer.layers["nuclei probability"].data
    assert prob[2].max() > 0 and not prob[[0, 1, 3]].any()
    assert not labels.data[[0, 1, 3]].any()  # only the current slice was segmented
    assert widget.device_label.text().startswith("using cpu, ")
    assert widget.cancel_button.isEnabled() is False


def test_tta_and_postprocessing_follow_the_chosen_model(make_napari_viewer, tiny_session, qtbot):
    viewer = make_napari_viewer()
    widget = _segment_dock(viewer)
    assert widget.tta_check.isChecked() is False  # the tiny model recommends nothing
    assert widget.fill_check.isChecked() is False
    em_like = UNet(base_channels=4, depth=3)
    em_like.record["predict"] = {"tta": True}
    em_like.record["postprocess"] = {"threshold": 0.05, "min_size": 3, "fill": True,
                                     "seed_threshold": 0.9}
    tiny_session.add_model(em_like, kind="new", name="tta-model")
    widget.model_combo.setCurrentText("tta-model")
    widget._on_model_chosen(widget.model_combo.currentIndex())
    assert widget.tta_check.isChecked() is True and widget.fill_check.isChecked() is True
    assert widget.threshold_spin.value() == pytest.approx(0.05) and widget.min_size_spin.value() == 3
    assert widget.seed_spin.value() == pytest.approx(0.9)
    widget.scope_combo.setCurrentText("current slice")
    viewer.dims.set_current_step(0, 1)
    wait_finished(qtbot, widget.run())
    labels = viewer.layers["nuclei labels"].data
    assert labels[1].all() and not labels[[0, 2, 3]].any()  # the filled slice has no background
    widget.model_combo.setCurrentText("tiny")
    widget._on_model_chosen(widget.model_combo.currentIndex())
    assert widget.tta_check.isChecked() is False and widget.fill_check.isChecked() is False
    assert widget.seed_spin.value() == 0.0 and widget.seed_spin.text() == "off"


def test_segment_keeps_corrected_slices_unless_confirmed(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = _segment_dock(viewer)
    widget.scope_combo.setCurrentText("whole stack")
    wait_finished(qtbot, widget.run())
    labels = viewer.layers["nuclei labels"]
    ids = [set(np.unique(labels.data[z])) - {0} for z in range(4)]
    assert all(not (ids[a] & ids[b]) for a in range(4) for b in range(a + 1, 4))
    pattern = np.zeros((256, 256), np.int32)
    pattern[10:20, 10:20] = 77
    data = labels.data
    data[1] = pattern
    labels.data = data
    get_session().set_corrected(labels, [1])

    asked = []
    widget.confirm_overwrite = lambda slices: asked.append(list(slices)) or False
    worker = widget.run()
    wait_finished(qtbot, worker)
    assert asked == [[1]]
    np.testing.assert_array_equal(labels.data[1], pattern)

    widget.confirm_overwrite = lambda slices: True
    wait_finished(qtbot, widget.run())
    assert not np.array_equal(labels.data[1], pattern)


def test_overwrite_of_a_corrected_slice_can_be_undone(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = _segment_dock(viewer)
    widget.scope_combo.setCurrentText("whole stack")
    wait_finished(qtbot, widget.run())
    labels = viewer.layers["nuclei labels"]
    ys, xs = np.mgrid[10:20, 10:20]
    labels.data_setitem((np.full(ys.size, 1), ys.ravel(), xs.ravel()), 77)  # a correction
    corrected = np.array(labels.data)
    get_session().set_corrected(labels, [1, 2])

    widget.confirm_overwrite = lambda slices: True
    widget.scope_combo.setCurrentText("current slice")
    viewer.dims.set_current_step(0, 1)
    wait_finished(qtbot, widget.run())
    assert labels.data[1, 10:20, 10:20].max() != 77  # overwritten
    assert get_session().corrected(labels) == [2]  # no longer marked: it is a prediction now
    assert "Ctrl-Z" in widget.status.text()
    labels.undo()  # what Ctrl-Z does in the layer
    np.testing.assert_array_equal(labels.data, corrected)
    assert get_session().corrected(labels) == [1, 2]  # the mark came back with the data
    labels.redo()
    assert labels.data[1, 10:20, 10:20].max() != 77
    assert get_session().corrected(labels) == [2]  # a prediction again: unmarked again
    labels.undo()
    assert get_session().corrected(labels) == [1, 2]
    get_session().toggle_corrected(labels, 1)  # the user unmarks it by hand ...
    viewer.dims.set_current_step(0, 2)
    viewer.dims.set_current_step(0, 1)  # ... and the layer is redrawn: the choice stays
    assert get_session().corrected(labels) == [2]


def test_next_slice_goes_to_highest_mean_uncertainty(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = _segment_dock(viewer)
    widget.scope_combo.setCurrentText("whole stack")
    widget.unc_check.setChecked(True)
    wait_finished(qtbot, widget.run())
    unc = viewer.layers["nuclei uncertainty"].data
    means = unc.reshape(4, -1).mean(axis=1)
    best = int(np.argmax(means))
    viewer.dims.set_current_step(0, (best + 1) % 4)
    assert widget.go_to_next_slice() == best
    assert viewer.dims.current_step[0] == best

    # a slice marked corrected is skipped: the next best one is chosen
    get_session().set_corrected(viewer.layers["nuclei labels"], [best])
    second = int(np.argsort(means)[-2])
    widget.next_button.click()
    assert viewer.dims.current_step[0] == second


def test_next_slice_helper():
    unc = np.zeros((5, 4, 4), np.float32)
    unc[1] = 0.2
    unc[3] = 0.9
    unc[4] = 0.5
    assert next_slice_to_correct(unc, [0, 1, 3, 4], []) == 3
    assert next_slice_to_correct(unc, [0, 1, 3, 4], [3]) == 4
    assert next_slice_to_correct(unc, [0, 1, 2], []) == 1
    assert next_slice_to_correct(unc, [3], [3]) is None


def _errors_since(n):
    return [r for r in notification_manager.records[n:]
            if r.severity == NotificationSeverity.ERROR]


@pytest.mark.parametrize("channels", [3, 4])
def test_rgb_image_is_segmented_as_gray(make_napari_viewer, qtbot, channels):
    viewer = make_napari_viewer()
    rgb = np.zeros((64, 64, channels), np.uint8)
    rgb[16:40, 16:40, :3] = (200, 120, 60)
    viewer.add_image(rgb, name="rgb", rgb=True)
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet", "Segment")
    widget.image_combo.set_layer("rgb")
    widget.device_combo.setCurrentText("cpu")
    assert not widget.color_label.isHidden()  # the dock says what happens to colour
    n = len(notification_manager.records)
    wait_finished(qtbot, widget.run())
    assert not _errors_since(n)
    assert viewer.layers["rgb labels"].data.shape == (64, 64)
    assert "converted to gray" in widget.status.text()
    assert widget.run_button.isEnabled()


def test_channel_mismatch_gives_a_notification(make_napari_viewer, qtbot, tiny_session):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((64, 64), np.uint8), name="gray")
    tiny_session.add_model(UNet(in_channels=3, base_channels=4, depth=3), name="rgb model")
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet", "Segment")
    widget.image_combo.set_layer("gray")
    widget.device_combo.setCurrentText("cpu")
    assert widget.model_combo.currentText() == "rgb model"
    n = len(notification_manager.records)
    wait_finished(qtbot, widget.run())
    errors = _errors_since(n)
    assert errors and "3 input channel" in errors[-1].message


def test_cancel_segmentation_leaves_layers(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = _segment_dock(viewer)
    widget.scope_combo.setCurrentText("whole stack")
    worker = widget.run()
    widget.cancel()  # before the first tile: nothing is written
    wait_finished(qtbot, worker)
    assert "nuclei labels" not in viewer.layers
    assert widget.status.text() == "cancelled"
    assert widget.run_button.isEnabled()
