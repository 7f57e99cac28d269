"""Reading and writing arrays: TIFF (tifffile) and zarr."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import numpy as np

from .outputs import atomic_output, check_output, fsync_file, is_zarr_path


def _is_zarr(path: str | os.PathLike) -> bool:
    return is_zarr_path(path)


def _check_input(p: Path) -> None:
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise FileNotFoundError(f"no such file: {p}") from None
    except NotADirectoryError:
        raise FileNotFoundError(f"no such file: {p} (a parent is a file)") from None
    if stat.S_ISDIR(st.st_mode):
        if not _is_zarr(p):
            raise ValueError(f"{p} is a directory, not an image file (TIFF, or a .zarr store)")
    elif not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{p} is not a regular file (a FIFO or device); "
                         "give a TIFF file or a .zarr store")
    elif _is_zarr(p):
        raise ValueError(f"{p} is a file, not a zarr store (a .zarr directory)")


def read_array(path: str | os.PathLike) -> Any:
    """Read a TIFF (into memory) or open a zarr array (lazily).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If ``path`` is a directory (other than a zarr store), a FIFO or a device, or is
        not a readable TIFF or zarr array; the message names the file.
    """
    p = Path(path).expanduser()
    _check_input(p)
    if _is_zarr(p):
        import zarr

        try:
            z = zarr.open(str(p), mode="r")
        except Exception as err:
            raise ValueError(f"cannot read {p} as a zarr array: {err}") from None
        if not hasattr(z, "shape"):
            names = ", ".join(sorted(z.array_keys())) if hasattr(z, "array_keys") else ""
            raise ValueError(f"{p} is a zarr group, not an array; give one of its arrays"
                             + (f" ({names})" if names else ""))
        return z
    import tifffile

    try:
        data = tifffile.imread(p)
    except MemoryError:
        raise
    except Exception as err:
        raise ValueError(f"cannot read {p} as a TIFF image ({type(err).__name__}: {err})"
                         ) from None
    if data.size == 0:
        raise ValueError(f"{p} holds no image data (not a TIFF image, or empty)")
    return data


def write_array(path: str | os.PathLike, data: np.ndarray, *, overwrite: bool = True) -> Path:
    """Write ``data`` as TIFF (zlib) or zarr, chosen by the extension, atomically.

    The data goes to a temporary sibling that replaces ``path`` when complete (see
    :mod:`napari_unet.outputs`), so an interrupted write keeps the previous file.

    Parameters
    ----------
    path : str or path-like
        ``.tif`` or ``.zarr``; a symbolic link is followed.
    data : numpy.ndarray
        The array.
    overwrite : bool
        Replace an existing output (of the same kind). Directories that are not zarr
        stores, devices and FIFOs are refused whatever this says.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    p = Path(path)
    check_output(p, overwrite=overwrite, probe=False)
    with atomic_output(p) as tmp:
        if _is_zarr(p):
            import zarr

            z = zarr.open(str(tmp), mode="w", shape=data.shape, dtype=data.dtype)
            z[...] = data
        else:
            import tifffile

            tifffile.imwrite(tmp, data, compression="zlib")
            fsync_file(tmp)
    return p
