"""npe2 readers and writers: autosave files and model files dropped on the viewer, labels saved."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

pytest.importorskip("napari")

from napari_unet import _readers  # noqa: E402
from napari_unet._qt.layers import same_layer  # noqa: E402
from napari_unet._qt.session import get_session  # noqa: E402
from napari_unet._writers import labels_dtype, read_labels_marks  # noqa: E402
from napari_unet.autosave import CORRECTED_KEY, SUFFIX, autosave_path, write_autosave  # noqa: E402
from napari_unet.model_files import save_model  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_UNET_AUTOSAVE_DIR", str(tmp_path / "default"))
    get_session().reset()
    _readers._pending.clear()
    yield
    get_session().reset()


def _stack() -> np.ndarray:
    lab = np.zeros((3, 20, 24), np.int32)
    lab[0, 2:6, 2:6] = 1
    lab[2, 10:15, 8:20] = 7
    return lab


# --- autosave reader -----------------------------------------------------------------
def test_open_autosave_gives_labels_and_marks_the_dock_sees(make_napari_viewer, tmp_path):
    lab = _stack()
    path = write_autosave(tmp_path / f"cells{SUFFIX}", lab, [2, 0], {"layer": "cells labels"})
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros(lab.shape, np.uint8), name="cells")
    _, dock = viewer.window.add_plugin_dock_widget("napari-unet", "Fine-tune")
    dock.image_combo.set_layer("cells")
    (layer,) = viewer.open(str(path), plugin="napari-unet")
    assert type(layer).__name__ == "Labels" and layer.name == "cells labels"
    np.testing.assert_array_equal(layer.data, lab)
    assert get_session().corrected(layer) == [0, 2]  # where every dock reads the marks
    # as after Resume: the dock takes the image's labels and ticks the marked slices
    assert same_layer(dock.labels_combo.layer(), layer)
    assert dock.slice_list.checked() == [0, 2]
    # and the dropped layer keeps saving into the file it came from
    assert dock.correction.autosaver.path == path == autosave_path(layer)


def test_autosave_reader_ignores_other_npz(tmp_path):
    other = tmp_path / f"data{SUFFIX}"
    np.savez(other, image=np.zeros((4, 4)))
    assert _readers.get_autosave_reader(str(other)) is None
    assert _readers.get_autosave_reader(str(tmp_path / f"missing{SUFFIX}")) is None


def test_broken_autosave_gives_one_line_error_and_no_layer(make_napari_viewer, tmp_path):
    bad = tmp_path / f"bad{SUFFIX}"
    with zipfile.ZipFile(bad, "w") as z:  # names of an autosave, contents garbage
        z.writestr("labels.npy", b"not an array")
        z.writestr("corrected.npy", b"nor this")
    before = bad.read_bytes()
    reader = _readers.get_autosave_reader(str(bad))
    assert reader is not None
    with pytest.raises(ValueError, match=r"cannot read bad\.autosave\.npz") as info:
        reader(str(bad))
    assert "\n" not in str(info.value)
    viewer = make_napari_viewer()
    with pytest.raises(Exception, match="napari-unet"):
        viewer.open(str(bad), plugin="napari-unet")
    assert len(viewer.layers) == 0 and bad.read_bytes() == before


def test_autosave_with_marks_outside_the_stack_is_refused(tmp_path):
    path = write_autosave(tmp_path / f"a{SUFFIX}", _stack(), [5], {"layer": "a"})
    with pytest.raises(ValueError, match=r"slice\(s\) \[5\] lie outside the 3"):
        _readers.read_autosave_layer(path)
    # the same checks guard Resume, which reads through autosave.read_autosave too
    from napari_unet.autosave import read_autosave

    with pytest.raises(ValueError, match=r"slice\(s\) \[5\] lie outside the 3"):
        read_autosave(path)
    garbage = tmp_path / f"g{SUFFIX}"
    garbage.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"cannot read g\.autosave\.npz") as info:
        read_autosave(garbage)
    assert "\n" not in str(info.value) and garbage.read_bytes() == b"not a zip"


# --- model reader --------------------------------------------------------------------
def test_drop_model_file_adds_it_to_the_segment_list(make_napari_viewer, tmp_path, tiny_net):
    path = save_model(tiny_net, tmp_path / "mine.pt")
    viewer = make_napari_viewer()
    _, dock = viewer.window.add_plugin_dock_widget("napari-unet", "Segment")
    assert "mine.pt" not in [dock.model_combo.itemText(i) for i in range(dock.model_combo.count())]
    assert viewer.open(str(path), plugin=None) == []  # as a drop: the only .pt reader
    items = [dock.model_combo.itemText(i) for i in range(dock.model_combo.count())]
    assert "mine.pt" in items and dock.model_combo.currentText() == "mine.pt"
    version = get_session().get("mine.pt")
    assert version.kind == "file" and version.loaded  # loaded once, by the reader
    assert version.get_model().config == tiny_net.config


def test_model_read_before_any_dock_joins_the_list_later(tmp_path, tiny_net, monkeypatch):
    from napari_unet._qt import session as session_mod

    path = save_model(tiny_net, tmp_path / "early.pt")
    monkeypatch.setattr(session_mod, "_SESSION", None)  # no dock opened yet
    monkeypatch.setattr(_readers, "_watchers", [])
    assert _readers.get_model_reader(str(path))(str(path)) == [(None,)]
    assert [p.name for p, _ in _readers._pending] == ["early.pt"]
    assert "early.pt" in session_mod.get_session().names()
    assert _readers._pending == []


def test_drop_bioimageio_package_adds_it_to_the_segment_list(make_napari_viewer, tmp_path,
                                                             tiny_net, monkeypatch):
    pytest.importorskip("bioimageio.spec", reason="export needs the [bioimageio] extra")
    import socket

    from napari_unet.bioimageio.export import export_bioimageio

    def refuse(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    package = export_bioimageio(tiny_net, tmp_path / "tiny.zip")
    viewer = make_napari_viewer()
    _, dock = viewer.window.add_plugin_dock_widget("napari-unet", "Segment")
    assert viewer.open(str(package), plugin="napari-unet") == []
    assert dock.model_combo.currentText() == "tiny.zip"
    model = get_session().get("tiny.zip").get_model()
    assert model.config == tiny_net.config  # our own export: a UNet again


def test_readers_and_writers_import_no_qt_or_napari():
    import subprocess
    import sys

    code = ("import sys, napari_unet._readers, napari_unet._writers; "
            "bad = [m for m in ('napari', 'qtpy', 'PyQt6', 'magicgui') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_broken_model_file_gives_one_line_error_and_no_entry(make_napari_viewer, tmp_path):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"\x00not a torch file" * 10)
    viewer = make_napari_viewer()
    _, dock = viewer.window.add_plugin_dock_widget("napari-unet", "Segment")
    names = get_session().names()
    with pytest.raises(ValueError, match=r"^cannot load broken\.pt as a model: ") as info:
        _readers.get_model_reader(str(bad))(str(bad))
    assert "\n" not in str(info.value)
    assert get_session().names() == names and dock.model_combo.currentText() != "broken.pt"
    assert bad.read_bytes() == b"\x00not a torch file" * 10


def test_only_bioimageio_zips_are_claimed(tmp_path):
    plain = tmp_path / "photos.zip"
    with zipfile.ZipFile(plain, "w") as z:
        z.writestr("a.txt", "hello")
    package = tmp_path / "model.zip"
    with zipfile.ZipFile(package, "w") as z:
        z.writestr("rdf.yaml", "type: model\n")
    assert _readers.get_model_reader(str(plain)) is None
    assert _readers.get_model_reader(str(package)) is not None
    assert _readers.get_model_reader(str(tmp_path / "nothing.pt")) is None


def test_rdf_names_agree_with_the_importer():
    from napari_unet.bioimageio import load as bioimageio_import

    assert _readers.RDF_NAMES == bioimageio_import.RDF_NAMES


# --- writers -------------------------------------------------------------------------
def test_save_labels_tiff_keeps_marks(make_napari_viewer, tmp_path):
    import tifffile

    viewer = make_napari_viewer()
    layer = viewer.add_labels(_stack(), name="cells labels")
    get_session().set_corrected(layer, [2, 0])
    out = tmp_path / "cells.tif"
    layer.save(str(out), plugin="napari-unet")
    back = tifffile.imread(out)
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, layer.data)
    assert read_labels_marks(out) == [0, 2]
    with tifffile.TiffFile(out) as tif:
        assert tif.shaped_metadata[0]["name"] == "cells labels"


def test_large_ids_are_saved_as_uint32(tmp_path):
    import tifffile

    from napari_unet._writers import write_labels_tiff

    lab = _stack().astype(np.int64)
    lab[1, 0, 0] = 70_000
    write_labels_tiff(str(tmp_path / "big.tif"), lab, {"metadata": {CORRECTED_KEY: [1]}})
    back = tifffile.imread(tmp_path / "big.tif")
    assert back.dtype == np.uint32 and back[1, 0, 0] == 70_000
    assert labels_dtype(np.array([[65_535]])) == np.uint16


def test_save_labels_zarr_keeps_marks(make_napari_viewer, tmp_path):
    import zarr

    viewer = make_napari_viewer()
    layer = viewer.add_labels(_stack(), name="cells labels")
    get_session().set_corrected(layer, [1])
    out = tmp_path / "cells.zarr"
    layer.save(str(out), plugin="napari-unet")
    z = zarr.open(str(out), mode="r")
    np.testing.assert_array_equal(z[...], layer.data)
    assert z.dtype == np.uint16 and z.chunks == (1, 20, 24)
    assert read_labels_marks(out) == [1]
    layer.data[0, 0, 0] = 3
    layer.save(str(out), plugin="napari-unet")  # replaces the store (napari's dialog asked)
    assert zarr.open(str(out), mode="r")[0, 0, 0] == 3


@pytest.mark.parametrize("case", ["negative", "float", "folder"])
def test_bad_save_gives_one_line_error_and_keeps_files(tmp_path, case):
    from napari_unet._writers import write_labels_tiff, write_labels_zarr

    lab = _stack()
    old = tmp_path / "old.tif"
    old.write_bytes(b"the user's previous file")
    target, writer = old, write_labels_tiff
    if case == "negative":
        lab[0, 0, 0] = -4
    elif case == "float":
        lab = lab.astype(np.float32)
    else:
        target, writer = tmp_path / "notes.zarr", write_labels_zarr
        target.mkdir()
        (target / "keep.txt").write_text("mine")
    with pytest.raises(ValueError) as info:
        writer(str(target), lab, {"metadata": {}})
    assert "\n" not in str(info.value) and str(info.value)
    assert old.read_bytes() == b"the user's previous file"
    if case == "folder":
        assert (target / "keep.txt").read_text() == "mine"
        assert "not a zarr store" in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["old.tif"] + (["notes.zarr"] if case == "folder" else []))


def test_manifest_lists_readers_writers_and_categories():
    from importlib import resources

    from npe2 import PluginManifest

    mf = PluginManifest.from_file(str(resources.files("napari_unet") / "napari.yaml"))
    assert {"Segmentation", "Annotation"} <= set(mf.categories)
    patterns = {p for r in mf.contributions.readers for p in r.filename_patterns}
    assert {"*.autosave.npz", "*.pt", "*.zip"} <= patterns
    exts = {e for w in mf.contributions.writers for e in w.filename_extensions}
    assert {".tif", ".tiff", ".zarr"} <= exts
    mf.validate_imports()
