"""Small factories for the docks' spin boxes and check boxes (one call per control)."""

from __future__ import annotations

from qtpy.QtWidgets import QCheckBox, QDoubleSpinBox, QSpinBox, QWidget


def spin_box(parent: QWidget, low: float, high: float, *, double: bool = False,
             decimals: int | None = None, step: float | None = None, value: float | None = None,
             special: str | None = None, suffix: str | None = None,
             tip: str | None = None) -> QSpinBox | QDoubleSpinBox:
    """A spin box with its range and, where given, the other settings.

    Parameters
    ----------
    parent : QWidget
        The dock.
    low, high : float
        The range.
    double : bool
        A :class:`QDoubleSpinBox` (else a :class:`QSpinBox`).
    decimals : int, optional
        Decimals of a double spin box (set before the range, which they round).
    step : float, optional
        The single step.
    value : float, optional
        The initial value (set after the range).
    special : str, optional
        The text shown at the minimum (``setSpecialValueText``).
    suffix : str, optional
        A unit shown after the value.
    tip : str, optional
        The tooltip.

    Returns
    -------
    QSpinBox or QDoubleSpinBox
        The spin box.
    """
    box = QDoubleSpinBox(parent) if double else QSpinBox(parent)
    if decimals is not None:
        box.setDecimals(decimals)
    box.setRange(low, high)
    if step is not None:
        box.setSingleStep(step)
    if special is not None:
        box.setSpecialValueText(special)
    if suffix is not None:
        box.setSuffix(suffix)
    if tip is not None:
        box.setToolTip(tip)
    if value is not None:
        box.setValue(value)
    return box


def check_box(text: str, parent: QWidget, *, checked: bool = False,
              tip: str | None = None) -> QCheckBox:
    """A check box, ticked when ``checked``, with an optional tooltip."""
    box = QCheckBox(text, parent)
    if tip is not None:
        box.setToolTip(tip)
    if checked:
        box.setChecked(True)
    return box
