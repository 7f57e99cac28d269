"""Reading and writing arrays: TIFF (tifffile) and zarr."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def _is_zarr(path: str | os.PathLike) -> bool:
    return str(path).rstrip("/").endswith(".zarr")


def read_array(path: str | os.PathLike) -> Any:
    """Read a TIFF (into memory) or open a zarr array (lazily).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no such file: {p}")
    if _is_zarr(p):
        import zarr

        return zarr.open(str(p), mode="r")
    import tifffile

    return tifffile.imread(p)


def write_array(path: str | os.PathLike, data: np.ndarray) -> Path:
    """Write ``data`` as TIFF (atomically, zlib) or zarr, chosen by the extension."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if _is_zarr(p):
        import zarr

        z = zarr.open(str(p), mode="w", shape=data.shape, dtype=data.dtype)
        z[...] = data
        return p
    import tifffile

    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tif", dir=p.parent)
    os.close(fd)
    try:
        tifffile.imwrite(tmp, data, compression="zlib")
        os.chmod(tmp, 0o644)  # mkstemp makes it private
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p
