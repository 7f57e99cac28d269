"""Writing results into layers: only the slices that changed, and undoable for Labels.

A Labels layer's history only records edits made through ``Labels.data_setitem`` (its
public editing call); assigning ``layer.data`` replaces the array and cannot be undone.
:func:`write_label_slices` therefore writes only the pixels that differ, through
``data_setitem``, grouped into one undo step (``Labels.block_history``): Ctrl-Z in the layer
brings back everything one Segment replaced. Image layers (probability, uncertainty) are
written in place, slice by slice, and refreshed once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np


@contextlib.contextmanager
def one_undo_step(layer: Any) -> Iterator[None]:
    """Group the ``data_setitem`` edits made inside into one undo step (when napari can)."""
    block = getattr(layer, "block_history", None)
    if block is None:  # older napari: each slice becomes its own undo step
        yield
        return
    with block():
        yield


def write_label_slices(layer: Any, slices: Mapping[int | None, np.ndarray]) -> list[int]:
    """Write 2D label images into slices of a Labels layer, as one undoable edit.

    Parameters
    ----------
    layer : napari.layers.Labels
        The layer; its data must be a writable NumPy array.
    slices : mapping
        ``{z: (Y, X) labels}``; ``z`` is None for a 2D layer.

    Returns
    -------
    list of int
        The slices that changed (-1 stands for a 2D layer).
    """
    changed: list[int] = []
    data = layer.data
    with one_undo_step(layer):
        for z, values in slices.items():
            old = np.asarray(data if z is None else data[z])
            new = np.asarray(values)
            diff = old != new
            if not diff.any():
                continue
            where = np.nonzero(diff)
            index = where if z is None else (np.full(where[0].shape, z, np.intp), *where)
            layer.data_setitem(index, new[diff].astype(old.dtype, copy=False))
            changed.append(-1 if z is None else int(z))
    return changed


def fits_dtype(dtype: Any, high: int) -> bool:
    """Whether label ids up to ``high`` fit into an integer ``dtype``."""
    dt = np.dtype(dtype)
    return np.issubdtype(dt, np.integer) and int(np.iinfo(dt).max) >= int(high)


def write_image_slices(layer: Any, slices: Mapping[int | None, np.ndarray]) -> None:
    """Write 2D float images into slices of an Image layer in place, then refresh it once."""
    data = layer.data
    for z, values in slices.items():
        if z is None:
            data[...] = values
        else:
            data[z] = values
    layer.refresh()
