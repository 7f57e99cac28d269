"""The napari loop never loses a correction and never takes the brush away (issue 18)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")

from napari_unet._qt.session import get_session  # noqa: E402
from napari_unet.jobs import Stage  # noqa: E402
from tests.conftest import force_self_check, wait_finished  # noqa: E402

TIMEOUT = 180_000

pytestmark = pytest.mark.usefixtures("tiny_session")


def _key(name):
    from napari.utils.key_bindings import coerce_keybinding

    return coerce_keybinding(name)


def _sample_with_docks(viewer):
    viewer.open_sample("napari-unet", "nuclei")
    _, seg = viewer.window.add_plugin_dock_widget("napari-unet", "Segment")
    _, ft = viewer.window.add_plugin_dock_widget("napari-unet", "Fine-tune")
    for w in (seg, ft):
        w.image_combo.set_layer("nuclei")
        w.device_combo.setCurrentText("cpu")
    ft.steps_spin.setValue(1)
    ft.tile_spin.setValue(64)
    ft.predict_after_check.setChecked(False)
    return seg, ft


def _segment_stack(qtbot, seg):
    seg.scope_combo.setCurrentText("whole stack")
    wait_finished(qtbot, seg.run())


def test_defaults_never_pick_the_hidden_ground_truth(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    seg, ft = _sample_with_docks(viewer)
    _, bw = viewer.window.add_plugin_dock_widget("napari-unet", "Border weights")
    assert ft.labels_combo.layer() is None and bw.labels_combo.layer() is None
    assert ft.correction.autosaver.labels is None  # autosave attached to nothing
    _segment_stack(qtbot, seg)
    assert ft.labels_combo.currentText() == "nuclei labels"
    assert ft.correction.autosaver.labels.name == "nuclei labels"
    # after Segment nothing is ticked: every slice holds the model's own prediction
    assert ft.slice_list.rows() == [0, 1, 2, 3] and ft.slice_list.checked() == []


def test_training_on_unmarked_slices_asks_first(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    seg, ft = _sample_with_docks(viewer)
    _segment_stack(qtbot, seg)
    labels = viewer.layers["nuclei labels"]
    get_session().set_corrected(labels, [0])
    assert ft.slice_list.checked() == [0]
    ft.slice_list.set_checked([0, 2])  # the user ticks a slice never corrected
    asked = []
    ft.confirm_unmarked = lambda slices: asked.append(list(slices)) or False
    assert ft.start() is None
    assert asked == [[2]] and "not marked" in ft.status.text()
    ft.confirm_unmarked = lambda slices: True
    wait_finished(qtbot, ft.start())


def test_predict_after_training_never_overwrites_a_corrected_slice(make_napari_viewer, qtbot,
                                                                   monkeypatch):
    force_self_check(monkeypatch, True)
    viewer = make_napari_viewer()
    seg, ft = _sample_with_docks(viewer)
    _segment_stack(qtbot, seg)
    labels = viewer.layers["nuclei labels"]
    viewer.dims.set_current_step(0, 1)
    ys, xs = np.mgrid[10:20, 10:20]
    labels.data_setitem((np.full(ys.size, 1), ys.ravel(), xs.ravel()), 99)
    ft.correction.mark_button.click()
    corrected = np.array(labels.data[1])
    asked = []
    seg.confirm_overwrite = lambda slices: asked.append(slices) or True
    ft.predict_after_check.setChecked(True)
    wait_finished(qtbot, ft.start())
    assert ft.predict_worker is not None
    wait_finished(qtbot, ft.predict_worker)
    assert not asked  # no dialog
    np.testing.assert_array_equal(labels.data[1], corrected)
    preview = viewer.layers["nuclei preview"]
    assert preview.data.shape == labels.data.shape and not preview.data[[0, 2, 3]].any()
    assert "nuclei preview" in ft.status.text()


def test_overwrite_keeps_an_autosave_backup_of_the_corrected_slice(make_napari_viewer, qtbot,
                                                                   tmp_path):
    from napari_unet.autosave import backup_path, read_autosave

    viewer = make_napari_viewer()
    seg, ft = _sample_with_docks(viewer)
    ft.correction.set_folder(tmp_path)
    _segment_stack(qtbot, seg)
    labels = viewer.layers["nuclei labels"]
    saver = ft.correction.autosaver
    qtbot.waitUntil(lambda: saver.worker is None and not saver.timer.isActive(),
                    timeout=TIMEOUT)
    viewer.dims.set_current_step(0, 2)
    ys, xs = np.mgrid[30:40, 30:40]
    labels.data_setitem((np.full(ys.size, 2), ys.ravel(), xs.ravel()), 55)
    corrected = np.array(labels.data[2])
    seg.confirm_overwrite = lambda slices: True
    seg.scope_combo.setCurrentText("current slice")
    with qtbot.waitSignal(saver.saved, timeout=TIMEOUT):
        ft.correction.mark_button.click()  # marked: saved with a backup
    qtbot.waitUntil(lambda: saver.worker is None, timeout=TIMEOUT)
    wait_finished(qtbot, seg.run())  # overwrites slice 2 after "Yes"
    qtbot.waitUntil(lambda: saver.worker is None and saver._queued is None, timeout=TIMEOUT)
    backup, marks, _ = read_autosave(backup_path(saver.path, 1))
    np.testing.assert_array_equal(backup[2], corrected)
    assert marks == [2]
    assert not np.array_equal(labels.data[2], corrected)


def test_keys_are_unbound_when_their_dock_closes(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-unet", "nuclei")
    dock, ft = viewer.window.add_plugin_dock_widget("napari-unet", "Fine-tune")
    assert _key("Shift-M") in viewer.keymap and _key("Shift-E") in viewer.keymap
    assert _key("Shift-N") not in viewer.keymap  # napari's own M makes a new label
    assert "(M)" in ft.correction.new_button.text()
    dock.destroyOnClose()  # what the dock's close button does
    assert _key("Shift-M") not in viewer.keymap and _key("Shift-E") not in viewer.keymap


def test_new_label_uses_napari_action(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-unet", "nuclei")
    _, ft = viewer.window.add_plugin_dock_widget("napari-unet", "Fine-tune")
    labels = viewer.layers["nuclei ground truth"]
    ft.labels_combo.set_layer(labels)
    assert ft.correction.new_label() == int(labels.data.max()) + 1
    assert viewer.layers.selection.active is labels and labels.mode == "paint"


def test_stop_right_after_start(make_napari_viewer, qtbot, tiny_session):
    viewer = make_napari_viewer()
    seg, ft = _sample_with_docks(viewer)
    ft.labels_combo.set_layer("nuclei ground truth")
    get_session().set_corrected(viewer.layers["nuclei ground truth"], [0, 1])
    ft.steps_spin.setValue(100000)
    n_versions = len(tiny_session.versions())
    worker = ft.start()
    with qtbot.waitSignal(worker.finished, timeout=TIMEOUT):
        ft.stop()  # before the first step, before the anchors' predictions
    assert worker.abort_requested
    assert len(tiny_session.versions()) == n_versions
    assert ft.start_button.isEnabled() and "cancelled" in ft.status.text()


def test_deleting_the_labels_mid_finetune_is_said_and_picks_nothing(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    seg, ft = _sample_with_docks(viewer)
    _segment_stack(qtbot, seg)
    labels = viewer.layers["nuclei labels"]
    get_session().set_corrected(labels, [0])
    viewer.add_labels(np.zeros((4, 256, 256), np.int32), name="other")
    ft.steps_spin.setValue(100000)
    worker = ft.start()
    with qtbot.waitSignal(worker.yielded, timeout=TIMEOUT):
        pass
    viewer.layers.remove(labels)
    assert ft.labels_combo.layer() is None  # not silently switched to "other"
    assert "deleted" in ft.status.text()
    with qtbot.waitSignal(worker.finished, timeout=TIMEOUT):
        ft.stop()


def test_status_after_a_failed_finetune(make_napari_viewer, qtbot, monkeypatch):
    from napari_unet.training import finetune_jobs

    def broken(*args, **kwargs):
        yield Stage("preparing")
        raise ValueError("broken on purpose")

    monkeypatch.setattr(finetune_jobs, "finetune_iter", broken)
    monkeypatch.setattr("napari_unet._qt.finetune.finetune_iter", broken)
    viewer = make_napari_viewer()
    seg, ft = _sample_with_docks(viewer)
    ft.labels_combo.set_layer("nuclei ground truth")
    get_session().set_corrected(viewer.layers["nuclei ground truth"], [0])
    wait_finished(qtbot, ft.start())
    assert ft.status.text() == "fine-tuning failed: broken on purpose"


def test_status_after_nothing_to_do_and_a_deleted_image(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    seg, ft = _sample_with_docks(viewer)
    seg.scope_combo.setCurrentText("current slice")
    wait_finished(qtbot, seg.run())
    z = int(viewer.dims.current_step[0])
    get_session().set_corrected(viewer.layers["nuclei labels"], [z])
    seg.confirm_overwrite = lambda slices: False
    assert seg.run() is None
    assert seg.status.text().startswith("nothing to do")
    worker = seg.run(slices=[(z + 1) % 4])
    viewer.layers.remove("nuclei")
    wait_finished(qtbot, worker)
    assert "removed" in seg.status.text()


def test_start_right_after_a_write_refreshes_the_slices_first(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    seg, ft = _sample_with_docks(viewer)
    layer = viewer.add_labels(np.zeros((4, 256, 256), np.int32), name="cells")
    ft.labels_combo.set_layer(layer)
    get_session().set_corrected(layer, [0])
    ys, xs = np.mgrid[5:25, 5:25]
    layer.data_setitem((np.full(ys.size, 2), ys.ravel(), xs.ravel()), 3)
    assert ft.refresh_timer.isActive() and ft.slice_list.rows() == [0]  # not yet refreshed
    ft.confirm_unmarked = lambda slices: True
    layer.data_setitem((np.full(ys.size, 0), ys.ravel(), xs.ravel()), 4)
    worker = ft.start()
    assert worker is not None and ft.slice_list.rows() == [0, 2]
    with qtbot.waitSignal(worker.finished, timeout=TIMEOUT):
        ft.stop()


def test_rgb_stack_finetunes_as_gray(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (2, 64, 64, 3), dtype=np.uint8)
    viewer.add_image(rgb, name="colour", rgb=True)
    lab = np.zeros((2, 64, 64), np.int32)
    lab[:, 10:30, 10:30] = 1
    layer = viewer.add_labels(lab, name="colour labels")
    _, ft = viewer.window.add_plugin_dock_widget("napari-unet", "Fine-tune")
    ft.image_combo.set_layer("colour")
    assert ft.labels_combo.currentText() == "colour labels"
    ft.steps_spin.setValue(1)
    ft.tile_spin.setValue(32)
    ft.device_combo.setCurrentText("cpu")
    ft.predict_after_check.setChecked(False)
    get_session().set_corrected(layer, [0])
    seen = []
    worker = ft.start()
    worker.yielded.connect(lambda v: seen.append(v.message) if isinstance(v, Stage) else None)
    with qtbot.waitSignals([worker.returned, worker.finished], timeout=TIMEOUT):
        pass
    assert any("converted to gray" in s for s in seen)
