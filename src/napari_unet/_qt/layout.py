"""Dock layouts that fit a 1920x1080 screen: scrollable bodies and wrapping status lines.

napari stacks the docks of one side on top of each other, and the window cannot get
smaller than the sum of their minimum heights. Each dock of this plugin therefore puts
its controls into a :class:`~qtpy.QtWidgets.QScrollArea`: its minimum height is a few
lines, and what does not fit scrolls. A status line wraps and claims the height its
text needs (``heightForWidth``), so the buttons below it are pushed down, never cut off.
"""

from __future__ import annotations

from qtpy.QtCore import QSize, Qt
from qtpy.QtWidgets import (
    QFrame,
    QLabel,
    QScrollArea,
    QSizePolicy,
    QStyle,
    QVBoxLayout,
    QWidget,
)

#: The smallest height of a dock's scroll area (px): a few rows stay visible.
MIN_DOCK_HEIGHT = 120
#: The largest height a dock asks for (px); more scrolls.
MAX_HINT_HEIGHT = 900


class BodyScrollArea(QScrollArea):
    """A scroll area that asks for the height its body wants (Qt caps it at 24 lines)."""

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt API
        hint = super().sizeHint()
        body = self.widget()
        if body is not None:
            want = body.sizeHint().height() + 2 * self.frameWidth()
            hint.setHeight(min(max(hint.height(), want), MAX_HINT_HEIGHT))
        return hint


def scroll_body(owner: QWidget) -> QVBoxLayout:
    """Give ``owner`` a scrollable body and return the body's layout to fill.

    Parameters
    ----------
    owner : QWidget
        The dock's widget; it gets a margin-less layout holding only the scroll area.

    Returns
    -------
    QVBoxLayout
        The layout of the scrolled body (add the dock's rows to it).
    """
    outer = QVBoxLayout(owner)
    outer.setContentsMargins(0, 0, 0, 0)
    area = BodyScrollArea(owner)
    area.setObjectName("napari_unet_scroll")
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
    area.setMinimumHeight(MIN_DOCK_HEIGHT)
    body = QWidget(area)
    body.setObjectName("napari_unet_body")
    layout = QVBoxLayout(body)
    area.setWidget(body)
    outer.addWidget(area)
    owner.scroll_area = area  # type: ignore[attr-defined]
    return layout


def fit_width(owner: QWidget) -> None:
    """Make the scroll area at least as wide as its body needs (no horizontal scrolling).

    Call once the body is filled; a vertical scroll bar's width is included.
    """
    area = getattr(owner, "scroll_area", None)
    if area is None or area.widget() is None:
        return
    bar = area.style().pixelMetric(QStyle.PixelMetric.PM_ScrollBarExtent)
    area.setMinimumWidth(area.widget().minimumSizeHint().width() + bar + 2)


def status_label(parent: QWidget) -> QLabel:
    """A status line that wraps and always gets the height of its text.

    The vertical policy ``Minimum`` keeps the layout from squeezing it below the height
    its wrapped text needs; the text can be selected and copied.
    """
    label = QLabel("", parent)
    label.setWordWrap(True)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    policy = QSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Minimum)
    policy.setHeightForWidth(True)
    label.setSizePolicy(policy)
    return label
