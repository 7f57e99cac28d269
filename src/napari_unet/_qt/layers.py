"""Layer helpers of the docks: the layer pickers and the current slice of a layer."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtWidgets import QComboBox, QWidget

from .jobs import connect_event

if TYPE_CHECKING:
    import napari
    from napari.layers import Layer


class LayerCombo(QComboBox):
    """A combo box listing the viewer's layers of some types, kept in sync.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer.
    layer_type : type or tuple of type
        Layer classes to list, e.g. ``napari.layers.Image``.
    parent : QWidget, optional
        Parent widget.
    prefer : callable, optional
        ``prefer(layers) -> layer or None``: the layer to choose when nothing is chosen
        yet (or the chosen one went away). With it the list starts with an empty entry
        ("none"), chosen when ``prefer`` returns None or when the chosen layer is deleted:
        no other layer is ever picked behind the user's back.
    """

    def __init__(self, viewer: napari.Viewer, layer_type: Any, parent: QWidget | None = None,
                 prefer: Callable[[list[Layer]], Layer | None] | None = None):
        super().__init__(parent)
        self._viewer = viewer
        self._type = layer_type
        self._prefer = prefer
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(12)
        self.refresh()
        self._add_callbacks()

    def _add_callbacks(self) -> None:
        events = self._viewer.layers.events
        for emitter in (events.inserted, events.removed, events.moved, events.changed):
            connect_event(self, emitter, self.refresh)
        connect_event(self, events.inserted, self._watch_name)
        for layer in self._viewer.layers:
            layer.events.name.connect(self.refresh)

    def _watch_name(self, event: Any) -> None:
        event.value.events.name.connect(self.refresh)

    def refresh(self, *_: Any) -> None:
        """Re-list the layers, keeping the current choice when it still exists."""
        current = self.currentText()
        layers = [lay for lay in self._viewer.layers if isinstance(lay, self._type)]
        names = [lay.name for lay in layers]
        self.blockSignals(True)
        self.clear()
        if self._prefer is not None:
            self.addItem("")
        self.addItems(names)
        if current in names:
            self.setCurrentText(current)
        elif self._prefer is not None and not current:  # a vanished choice is not replaced
            chosen = self._prefer(layers)
            self.setCurrentText(chosen.name if chosen is not None else "")
        self.blockSignals(False)
        if self.currentText() != current:
            self.currentTextChanged.emit(self.currentText())

    def layer(self) -> Layer | None:
        """Return the selected layer, or None."""
        name = self.currentText()
        if name and name in self._viewer.layers:
            return self._viewer.layers[name]
        return None

    def set_layer(self, layer: Layer | str) -> None:
        """Select ``layer`` (or a layer name)."""
        self.refresh()
        self.setCurrentText(layer if isinstance(layer, str) else layer.name)


def prefer_labels(viewer: napari.Viewer, first: Callable[[], str | None] = lambda: None,
                  ) -> Callable[[list[Layer]], Layer | None]:
    """A ``prefer`` for :class:`LayerCombo` of Labels layers.

    The layer named ``first()`` (the one Segment writes), else the selected Labels layer
    when it is visible, else the first visible one; never a hidden layer (e.g. a sample's
    ground truth, which napari selects when the sample opens).
    """

    def choose(layers: list[Layer]) -> Layer | None:
        name = first()
        by_name = {lay.name: lay for lay in layers}
        if name and name in by_name:
            return by_name[name]
        active = viewer.layers.selection.active
        if active is not None and active.visible and any(lay is active for lay in layers):
            return active
        return next((lay for lay in layers if lay.visible), None)

    return choose


def unwrap(obj: Any) -> Any:
    """Return the object behind napari's ``PublicOnlyProxy`` (plugin docks get proxies)."""
    return getattr(obj, "__wrapped__", obj)


def same_layer(a: Any, b: Any) -> bool:
    """Whether ``a`` and ``b`` are the same layer, proxied or not."""
    return a is not None and b is not None and unwrap(a) is unwrap(b)


def image_channel_axis(layer: Layer) -> int | None:
    """Channel axis of an Image layer's data: ``-1`` for RGB(A) layers, else None."""
    return -1 if getattr(layer, "rgb", False) else None


def spatial_ndim(layer: Layer) -> int:
    """Spatial dimensions of a layer (``layer.ndim`` excludes the RGB axis already)."""
    return int(layer.ndim)


def current_slice(viewer: napari.Viewer, layer: Layer) -> int:
    """Index of the Z slice of ``layer`` shown in the viewer (0 for 2D layers)."""
    if spatial_ndim(layer) < 3:
        return 0
    n = int(layer.data.shape[0])
    try:
        pos = layer.world_to_data(viewer.dims.point)
        z = int(np.round(pos[-3]))
    except (IndexError, ValueError, TypeError):
        z = int(viewer.dims.current_step[-3])
    return int(np.clip(z, 0, n - 1))


def go_to_slice(viewer: napari.Viewer, layer: Layer, z: int) -> None:
    """Show slice ``z`` of a ``(Z, Y, X)`` layer in the viewer (``dims.set_current_step``)."""
    if spatial_ndim(layer) < 3:
        return
    axis = viewer.dims.ndim - spatial_ndim(layer)
    world_z = float(layer.data_to_world([z, 0, 0])[0])
    rng = viewer.dims.range[axis]
    step = int(np.round((world_z - rng.start) / (rng.step or 1.0)))
    viewer.dims.set_current_step(axis, step)
