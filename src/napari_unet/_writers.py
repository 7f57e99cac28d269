"""npe2 writers: a Labels layer to TIFF or zarr, with its corrected-slice marks.

* TIFF (``.tif``, ``.tiff``): zlib-compressed, ``uint16`` when the largest label fits,
  else ``uint32``. The marks go into tifffile's JSON image description
  (``TiffFile(path).shaped_metadata[0]["napari_unet_corrected"]``), with the layer name.
* zarr (``.zarr``): one chunk per slice, the same dtype rule, the marks and the name in
  the array's attributes (``zarr.open(path).attrs["napari_unet_corrected"]``).

napari's save dialog asks before replacing a file; the writers then replace it
atomically (a temporary sibling renamed into place, :mod:`napari_unet.outputs`), so a
failed write keeps the previous file. A directory that is not a zarr store, a device or
a FIFO is never written over, and labels that fit no unsigned 32-bit type (negative ids,
floats) are refused before anything is touched. This module imports neither napari nor
Qt.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .autosave import CORRECTED_KEY
from .outputs import OutputError, atomic_output, check_output, fsync_file, is_zarr_path

TIFF_EXTENSIONS = (".tif", ".tiff")


def labels_dtype(data: Any) -> np.dtype:
    """The file dtype of labels: ``uint16`` when the largest id fits, else ``uint32``.

    Raises
    ------
    ValueError
        When the labels are not integers, hold negative ids, or ids above ``2**32 - 1``.
    """
    arr = np.asarray(data)
    if arr.dtype == bool:
        return np.dtype(np.uint16)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"labels must be integers to be saved as labels, not {arr.dtype}")
    if arr.size == 0:
        raise ValueError("the labels are empty (no pixels); nothing to save")
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0:
        raise ValueError(f"labels hold negative ids (smallest {lo}); a label file holds ids >= 0")
    if hi > np.iinfo(np.uint32).max:
        raise ValueError(f"the largest label {hi} does not fit uint32")
    return np.dtype(np.uint16 if hi <= np.iinfo(np.uint16).max else np.uint32)


def marks_from_meta(meta: dict[str, Any] | None, n_slices: int) -> list[int]:
    """The corrected-slice marks napari passes in ``meta["metadata"]``, within the slices."""
    raw = ((meta or {}).get("metadata") or {}).get(CORRECTED_KEY, [])
    try:
        marks = sorted({int(z) for z in raw})
    except (TypeError, ValueError):
        raise ValueError(f"the layer's corrected-slice marks are not slice numbers: {raw!r}"
                         ) from None
    return [z for z in marks if 0 <= z < n_slices]


def _prepare(data: Any, meta: dict[str, Any] | None) -> tuple[np.ndarray, dict[str, Any]]:
    arr = np.asarray(data)
    dtype = labels_dtype(arr)
    n = arr.shape[0] if arr.ndim >= 3 else 1
    info = {CORRECTED_KEY: marks_from_meta(meta, n)}
    name = (meta or {}).get("name")
    if name:
        info["name"] = str(name)
    return arr.astype(dtype, copy=False), info


def _target(path: str | os.PathLike, zarr: bool) -> Path:
    p = Path(os.fspath(path)).expanduser()
    if zarr != is_zarr_path(p) or (not zarr and p.suffix.lower() not in TIFF_EXTENSIONS):
        want = "a .zarr store" if zarr else "a .tif or .tiff file"
        raise OutputError(f"{p.name}: this writer saves {want}; choose that extension")
    # napari's dialog already asked before replacing; devices, FIFOs, folders refused.
    return check_output(p, overwrite=True)


def write_labels_tiff(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """npe2 writer: Labels to a TIFF with the corrected-slice marks in its description.

    Parameters
    ----------
    path : str
        ``.tif`` or ``.tiff`` output.
    data : array-like
        The labels.
    meta : dict
        napari's layer attributes (``name``, ``metadata`` with the marks, ...).

    Returns
    -------
    list of str
        The written path.
    """
    import tifffile

    arr, info = _prepare(data, meta)
    out = _target(path, zarr=False)
    with atomic_output(out, directory=False) as tmp:
        tifffile.imwrite(tmp, arr, compression="zlib", photometric="minisblack",
                         metadata=info)
        fsync_file(tmp)
    return [str(path)]


def write_labels_zarr(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """npe2 writer: Labels to a zarr array store, with the marks in its attributes.

    Parameters
    ----------
    path : str
        ``.zarr`` output (a directory store).
    data : array-like
        The labels.
    meta : dict
        napari's layer attributes (``name``, ``metadata`` with the marks, ...).

    Returns
    -------
    list of str
        The written path.
    """
    import zarr

    arr, info = _prepare(data, meta)
    out = _target(path, zarr=True)
    chunks = (1, *arr.shape[1:]) if arr.ndim >= 3 else arr.shape
    with atomic_output(out, directory=True) as tmp:
        z = zarr.open_array(str(tmp), mode="w", shape=arr.shape, dtype=arr.dtype,
                            chunks=chunks)
        z[...] = arr
        z.attrs.update(info)
    return [str(path)]


def read_labels_marks(path: str | os.PathLike) -> list[int]:
    """The corrected-slice marks a file written here holds (``[]`` when none)."""
    p = Path(path)
    if is_zarr_path(p):
        import zarr

        return [int(z) for z in zarr.open(str(p), mode="r").attrs.get(CORRECTED_KEY, [])]
    import tifffile

    with tifffile.TiffFile(p) as tif:
        shaped = tif.shaped_metadata or ({},)
    return [int(z) for z in (shaped[0] or {}).get(CORRECTED_KEY, [])]
