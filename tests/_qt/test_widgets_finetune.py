"""Fine-tune dock: marking, a short fine-tune, cancel, roll back, save, preview."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("napari")

from napari_unet._qt.session import get_session  # noqa: E402
from tests.conftest import force_self_check, wait_finished  # noqa: E402

TIMEOUT = 180_000


pytestmark = pytest.mark.usefixtures("tiny_session")


def _finetune_dock(viewer, steps=2):
    viewer.open_sample("napari-unet", "nuclei")
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet", "Fine-tune")
    widget.image_combo.set_layer("nuclei")
    widget.labels_combo.set_layer("nuclei ground truth")
    widget.steps_spin.setValue(steps)
    widget.tile_spin.setValue(64)
    widget.device_combo.setCurrentText("cpu")
    widget.predict_after_check.setChecked(False)
    return widget


def _mark(viewer, widget, slices):
    for z in slices:
        viewer.dims.set_current_step(0, z)
        widget.correction.mark_button.click()


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_two_step_finetune_on_two_marked_slices(make_napari_viewer, qtbot, tiny_session,
                                                monkeypatch):
    viewer = make_napari_viewer()
    widget = _finetune_dock(viewer)
    assert widget.slice_list.rows() == [0, 1, 2, 3]  # auto-detected annotated slices
    _mark(viewer, widget, [0, 2])
    labels = viewer.layers["nuclei ground truth"]
    assert tiny_session.corrected(labels) == [0, 2]
    assert widget.slice_list.checked() == [0, 2]
    before = _state(tiny_session.get("tiny").get_model())
    n_versions = len(tiny_session.versions())

    force_self_check(monkeypatch, True)
    worker = widget.start()
    with qtbot.waitSignals([worker.returned, worker.finished], timeout=TIMEOUT):
        pass
    assert len(tiny_session.versions()) == n_versions + 1
    new = tiny_session.current
    assert new.kind == "fine-tuned" and new.parent == "tiny"
    assert new.name.startswith("fine-tuned 1 (")
    model = new.get_model()
    assert model.record["annotated_slices"] == [0, 2]
    assert model.record["steps"] == 2
    assert model.record["parent"] == "tiny" and "self_check" in model.record
    assert "on held-back parts of your corrections" in widget.status.text()
    assert widget.train_config().train.anchor_weight == 1.0
    widget.anchor_check.setChecked(False)
    assert widget.train_config().train.anchor_weight == 0.0
    widget.scratch_check.setChecked(True)
    assert widget.train_config().start == "scratch"
    assert widget.train_config().scale.mode == "auto"
    widget.scale_combo.setCurrentText("keep")
    assert widget.train_config().scale.mode == "keep"
    assert widget.train_config().smooth.mode == "auto"
    widget.smooth_combo.setCurrentText("keep")
    assert widget.train_config().smooth.mode == "keep"
    assert widget.plot.steps == [1, 2]
    assert widget.progress.value() == 2
    report = model.record["self_check"]
    title = widget.plot.axes.get_title()  # the self-check's before/after score
    assert title == (f"self-check {report['metric']}: {report['parent_score']:.2f} -> "
                     f"{report['new_score']:.2f} (better)")
    assert len(widget.plot.smooth_line.get_xdata()) == 2  # the smoothed curve is drawn
    assert worker.activity is not None and worker.activity.closed  # activity dock bar gone
    for k, v in _state(tiny_session.get("tiny").get_model()).items():
        torch.testing.assert_close(v, before[k])  # the parent is untouched
    # the Segment model list shows the new version too
    _, seg = viewer.window.add_plugin_dock_widget("napari-unet", "Segment")
    assert seg.model_combo.currentText() == new.name

    # roll back to the parent
    widget.versions.combo.setCurrentIndex(tiny_session.names().index("tiny"))
    widget.versions.use_button.click()
    assert tiny_session.current.name == "tiny"
    assert seg.model_combo.currentText() == "tiny"


def test_a_version_that_is_not_better_is_added_but_not_made_current(make_napari_viewer, qtbot,
                                                                    tiny_session, monkeypatch):
    viewer = make_napari_viewer()
    widget = _finetune_dock(viewer)
    _mark(viewer, widget, [0, 2])
    force_self_check(monkeypatch, False)
    n_versions = len(tiny_session.versions())
    worker = widget.start()
    with qtbot.waitSignals([worker.returned, worker.finished], timeout=TIMEOUT):
        pass
    assert len(tiny_session.versions()) == n_versions + 1
    assert tiny_session.current.name == "tiny"  # the parent stays selected
    assert "is NOT better than tiny" in widget.status.text()
    rejected = tiny_session.versions()[-1]
    assert rejected.parent == "tiny" and not rejected.get_model().record["self_check"]["accepted"]

def test_cancel_keeps_previous_model_selected_and_intact(make_napari_viewer, qtbot,
                                                         tiny_session):
    viewer = make_napari_viewer()
    widget = _finetune_dock(viewer, steps=100000)
    _mark(viewer, widget, [0])
    before = _state(tiny_session.current.get_model())
    n_versions = len(tiny_session.versions())
    worker = widget.start()
    with qtbot.waitSignal(worker.yielded, timeout=TIMEOUT):
        pass  # training is under way
    assert widget.stop_button.isEnabled()
    with qtbot.waitSignal(worker.finished, timeout=TIMEOUT):
        widget.stop_button.click()
    assert worker.abort_requested
    assert tiny_session.current.name == "tiny"
    assert len(tiny_session.versions()) == n_versions
    after = _state(tiny_session.current.get_model())
    assert before.keys() == after.keys()
    for k in before:
        torch.testing.assert_close(after[k], before[k], rtol=0, atol=0)
    assert widget.start_button.isEnabled() and not widget.stop_button.isEnabled()
    assert "cancelled" in widget.status.text()


@pytest.mark.parametrize("close", ["dock", "napari"])
def test_closing_stops_training(make_napari_viewer, qtbot, tiny_session, close):
    viewer = make_napari_viewer()
    widget = _finetune_dock(viewer, steps=100000)
    _mark(viewer, widget, [0])
    worker = widget.start()
    with qtbot.waitSignal(worker.yielded, timeout=TIMEOUT):
        pass
    with qtbot.waitSignal(worker.finished, timeout=TIMEOUT):
        if close == "dock":
            viewer.window.remove_dock_widget("all")
            widget.deleteLater()
        else:
            viewer.close()
    assert worker.abort_requested
    assert tiny_session.current.name == "tiny"


def test_predict_after_training_and_save(make_napari_viewer, qtbot, tiny_session, tmp_path,
                                        monkeypatch):
    from napari_unet.model_files import load_model

    force_self_check(monkeypatch, True)  # only an accepted version segments afterwards
    viewer = make_napari_viewer()
    widget = _finetune_dock(viewer, steps=1)
    widget.augment_check.setChecked(False)
    widget.predict_after_check.setChecked(True)
    _mark(viewer, widget, [1])
    viewer.dims.set_current_step(0, 3)
    worker = widget.start()
    wait_finished(qtbot, worker)
    assert widget.predict_worker is not None
    wait_finished(qtbot, widget.predict_worker)
    labels = viewer.layers["nuclei labels"]
    assert labels.data.shape == (4, 256, 256)
    assert not labels.data[[0, 1, 2]].any()

    path = widget.versions.save(tmp_path / "model.pt")
    loaded = load_model(path)
    for k, v in tiny_session.current.get_model().state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k].float(), v.float().cpu())


def test_augmentation_preview_adds_layers(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = _finetune_dock(viewer)
    viewer.dims.set_current_step(0, 1)
    wait_finished(qtbot, widget.preview_augmentation(seed=3))
    img = viewer.layers["augmented image"].data
    lab = viewer.layers["augmented labels"].data
    assert img.shape == lab.shape == (256, 256)
    assert lab.max() > 0


def test_correction_tools(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = _finetune_dock(viewer)
    labels = viewer.layers["nuclei ground truth"]
    viewer.dims.set_current_step(0, 0)
    assert widget.correction.new_label() == int(labels.data.max()) + 1
    assert labels.selected_label == int(labels.data.max()) + 1
    ys, xs = np.nonzero(labels.data[0])
    target = int(labels.data[0, ys[0], xs[0]])
    erased = widget.correction.erase_under_cursor(position=(0, ys[0], xs[0]))
    assert erased == target
    assert not (labels.data[0] == target).any()
    # the viewer key binding toggles the mark of the current slice
    viewer.keymap[_key("Shift-M")](viewer)
    assert get_session().corrected(labels) == [0]
    viewer.keymap[_key("Shift-M")](viewer)
    assert get_session().corrected(labels) == []


def _key(name):
    from napari.utils.key_bindings import coerce_keybinding

    return coerce_keybinding(name)




def test_large_stacks_are_scanned_in_a_worker(make_napari_viewer, qtbot, monkeypatch):
    from napari_unet._qt import finetune_scan as finetune

    monkeypatch.setattr(finetune, "SYNC_SCAN_BYTES", 0)  # every stack counts as large
    viewer = make_napari_viewer()
    widget = _finetune_dock(viewer)
    labels = viewer.layers["nuclei ground truth"]
    labels.data[1] = 0
    first = widget.refresh_slices()
    assert first is not None and widget.refresh_slices() is first  # one scan at a time
    qtbot.waitUntil(lambda: widget.scan_worker is None, timeout=TIMEOUT)
    assert widget.slice_list.rows() == [0, 2, 3]


def test_training_snapshot_copies_only_the_chosen_slices():
    from napari_unet.training.finetune_jobs import annotated_iter, labels_snapshot

    lab = np.arange(4 * 5 * 6, dtype=np.uint16).reshape(4, 5, 6)
    snap = labels_snapshot(lab, [1, 3])
    np.testing.assert_array_equal(snap[[1, 3]], lab[[1, 3]])
    assert not snap[[0, 2]].any()
    lab[1] = 7  # painting after the snapshot does not reach the training data
    assert snap[1, 0, 0] == 30
    np.testing.assert_array_equal(labels_snapshot(lab[0], None), lab[0])
    lab[2] = 0
    gen, seen = annotated_iter(lab), []
    with pytest.raises(StopIteration) as stop:
        while True:
            seen.append(next(gen).fraction)
    assert seen == [0.25, 0.5, 0.75, 1.0] and stop.value.value == [0, 1, 3]
