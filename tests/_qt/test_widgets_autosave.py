"""Autosave: debounced after painting, immediate on marking, atomic, and resumable."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")

from napari_unet._qt.session import get_session  # noqa: E402
from napari_unet.autosave import (  # noqa: E402
    SUFFIX,
    autosave_path,
    backup_path,
    read_autosave,
    slices_dir,
    write_autosave,
)

TIMEOUT = 30_000


@pytest.fixture(autouse=True)
def _autosave_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_UNET_AUTOSAVE_DIR", str(tmp_path / "default"))
    get_session().reset()


def _dock(viewer, folder):
    viewer.open_sample("napari-unet", "nuclei")
    labels = viewer.layers["nuclei ground truth"]
    labels.visible = True
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet", "Fine-tune")
    widget.image_combo.set_layer("nuclei")
    widget.labels_combo.set_layer(labels)
    widget.correction.set_folder(folder)
    return widget, labels


def test_write_and_read_are_atomic_roundtrip(tmp_path):
    lab = np.arange(24, dtype=np.int32).reshape(2, 3, 4)
    path = write_autosave(tmp_path / "x" / f"a{SUFFIX}", lab, [1], {"layer": "a"})
    out, marks, meta = read_autosave(path)
    np.testing.assert_array_equal(out, lab)
    assert marks == [1] and meta["layer"] == "a"
    folder = slices_dir(path)  # a stack: one file per slice
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name, folder.name]
    assert len(list(folder.iterdir())) == 2  # no temp file left


def test_a_stack_is_saved_per_slice_and_backups_keep_their_slices(tmp_path):
    path = tmp_path / f"a{SUFFIX}"
    lab = np.zeros((5, 32, 32), np.uint16)
    write_autosave(path, lab, [], {}, backup=True)
    files = read_autosave(path)[2]["slice_files"]
    new = lab.copy()
    new[3, :4, :4] = 7
    write_autosave(path, new, [3], {}, dirty=[3])
    out, marks, meta = read_autosave(path)
    np.testing.assert_array_equal(out, new)
    assert marks == [3]
    changed = {z for z in files if meta["slice_files"][z] != files[z]}
    assert changed == {"3"}  # only the dirty slice was written again
    np.testing.assert_array_equal(read_autosave(backup_path(path, 1))[0], lab)  # kept
    assert len(list(slices_dir(path).iterdir())) == 6  # 5 listed + the backup's slice 3
    write_autosave(path, new[:2], [], {}, dirty=[])  # another shape: every slice written
    np.testing.assert_array_equal(read_autosave(path)[0], new[:2])


def test_autosave_after_painting_reloads_the_same_labels(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    widget, labels = _dock(viewer, tmp_path / "saves")
    saver = widget.correction.autosaver
    assert saver.path == tmp_path / "saves" / f"nuclei_ground_truth{SUFFIX}"
    viewer.dims.set_current_step(0, 1)
    ys, xs = np.mgrid[5:15, 5:15]
    with qtbot.waitSignal(saver.saved, timeout=TIMEOUT) as blocker:
        labels.data_setitem((np.full(ys.size, 1), ys.ravel(), xs.ravel()), 999)
        assert saver.timer.isActive()  # debounced
    data, marks, meta = read_autosave(blocker.args[0])
    np.testing.assert_array_equal(data, labels.data)
    assert data[1, 5:15, 5:15].min() == 999
    assert marks == [] and meta["layer"] == "nuclei ground truth"
    files = meta["slice_files"]
    with qtbot.waitSignal(saver.saved, timeout=TIMEOUT) as blocker:  # a second stroke
        labels.data_setitem((np.full(ys.size, 1), ys.ravel() + 20, xs.ravel()), 998)
    data, _, meta = read_autosave(blocker.args[0])
    np.testing.assert_array_equal(data, labels.data)
    assert saver.last_copied == [1]  # only the painted slice was copied ...
    assert {z for z in files if meta["slice_files"][z] != files[z]} == {"1"}  # ... and written


def test_marking_saves_immediately_and_resume_restores(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    widget, labels = _dock(viewer, tmp_path / "saves")
    saver = widget.correction.autosaver
    viewer.dims.set_current_step(0, 2)
    with qtbot.waitSignal(saver.saved, timeout=TIMEOUT) as blocker:
        widget.correction.mark_button.click()
        assert not saver.timer.isActive()  # not debounced: written at once
        assert saver.worker is not None
    path = blocker.args[0]
    data, marks, _ = read_autosave(path)
    assert marks == [2]
    np.testing.assert_array_equal(data, labels.data)

    expected = np.array(labels.data)
    viewer.layers.remove(labels)
    restored = widget.correction.resume(path=path)
    assert restored.name == "nuclei ground truth"
    np.testing.assert_array_equal(restored.data, expected)
    assert get_session().corrected(restored) == [2]
    assert widget.labels_combo.currentText() == "nuclei ground truth"
    assert widget.slice_list.checked() == [2]


def test_an_older_background_write_never_replaces_a_newer_one(tmp_path):
    path = tmp_path / f"a{SUFFIX}"
    new, old = np.full((4, 4), 2, np.int32), np.ones((4, 4), np.int32)
    write_autosave(path, new, [0], {}, seq=10)
    write_autosave(path, old, [], {}, seq=9)  # finishes late
    labels, corrected, _ = read_autosave(path)
    assert labels.max() == 2 and corrected == [0]


def test_autosave_lies_beside_an_image_file(make_napari_viewer, tmp_path):
    import tifffile

    viewer = make_napari_viewer()
    img_path = tmp_path / "cells.tif"
    tifffile.imwrite(img_path, np.zeros((32, 32), np.uint8))
    (image,) = viewer.open(str(img_path))
    labels = viewer.add_labels(np.zeros((32, 32), np.int32), name="cells labels")
    assert autosave_path(labels, image) == tmp_path / f"cells.cells_labels{SUFFIX}"
    other = viewer.add_labels(np.zeros((32, 32), np.int32), name="other")
    assert autosave_path(other, image) != autosave_path(labels, image)
    assert autosave_path(labels, image, tmp_path / "elsewhere") == (
        tmp_path / "elsewhere" / f"cells_labels{SUFFIX}")


def test_a_failing_flush_is_said_not_raised(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    from napari_unet._qt import autosaver

    viewer = make_napari_viewer()
    widget, labels = _dock(viewer, tmp_path / "saves")
    saver = widget.correction.autosaver
    said = []
    monkeypatch.setattr(autosaver, "show_error", said.append)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(autosaver, "write_autosave", full_disk)
    labels.data_setitem((np.array([0]), np.array([3]), np.array([3])), 77)
    assert saver.timer.isActive()
    saver.flush()  # e.g. on closing: no exception, the user is told
    assert said and "No space left on device" in said[0]
