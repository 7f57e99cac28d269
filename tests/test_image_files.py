"""Direct tests of reading and writing image arrays (napari_unet.image_files)."""

import numpy as np
import pytest

from napari_unet.image_files import read_array, write_array


@pytest.mark.parametrize("name", ["a.tif", "a.zarr"])
def test_tiff_and_zarr_round_trip(tmp_path, name):
    data = np.arange(2 * 5 * 6, dtype=np.uint16).reshape(2, 5, 6)
    assert write_array(tmp_path / name, data) == tmp_path / name
    back = np.asarray(read_array(tmp_path / name))
    assert back.dtype == data.dtype
    np.testing.assert_array_equal(back, data)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no temporary left


def test_overwrite_false_keeps_the_existing_file(tmp_path):
    write_array(tmp_path / "a.tif", np.ones((3, 3), np.uint8))
    with pytest.raises(Exception, match="exists"):
        write_array(tmp_path / "a.tif", np.zeros((3, 3), np.uint8), overwrite=False)
    np.testing.assert_array_equal(read_array(tmp_path / "a.tif"), np.ones((3, 3), np.uint8))


def test_missing_and_unreadable_inputs_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_array(tmp_path / "missing.tif")
    (tmp_path / "junk.tif").write_bytes(b"not a tiff")
    with pytest.raises(ValueError, match="junk.tif"):
        read_array(tmp_path / "junk.tif")
    (tmp_path / "folder").mkdir()
    with pytest.raises(ValueError, match="folder"):
        read_array(tmp_path / "folder")
