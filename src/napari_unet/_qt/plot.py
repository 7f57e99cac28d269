"""A small live loss plot (matplotlib ``FigureCanvas``) for the Fine-tune dock."""

from __future__ import annotations

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QSizePolicy, QVBoxLayout, QWidget

REDRAW_MS = 250


class LossPlot(QWidget):
    """Training loss against step; redraws at most four times a second.

    Parameters
    ----------
    parent : QWidget, optional
        Parent widget.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.steps: list[int] = []
        self.losses: list[float] = []
        self.figure = Figure(figsize=(3.2, 1.8), dpi=80, layout="constrained")
        self.figure.patch.set_alpha(0.0)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setStyleSheet("background-color: transparent;")
        self.canvas.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.canvas.setFixedHeight(150)
        self.axes = self.figure.add_subplot()
        self._style()
        (self.line,) = self.axes.plot([], [], color="#f0a030", lw=1.2)
        self.axes.set_xlim(0, 1)
        self.axes.set_ylim(0, 1)
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setInterval(REDRAW_MS)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.canvas)
        self._add_callbacks()

    def _add_callbacks(self) -> None:
        self.timer.timeout.connect(self.redraw)

    def _style(self) -> None:
        ax = self.axes
        ax.set_facecolor("none")
        for spine in ax.spines.values():
            spine.set_color("#999999")
        ax.tick_params(colors="#bbbbbb", labelsize=8)
        ax.set_xlabel("step", color="#bbbbbb", fontsize=8)
        ax.set_ylabel("loss", color="#bbbbbb", fontsize=8)

    def clear(self) -> None:
        """Start a new curve."""
        self.steps.clear()
        self.losses.clear()
        self.redraw()

    def add(self, step: int, loss: float) -> None:
        """Append a point; the plot is redrawn shortly (coalescing fast updates)."""
        self.steps.append(int(step))
        self.losses.append(float(loss))
        if not self.timer.isActive():
            self.timer.start()

    def redraw(self) -> None:
        """Redraw now."""
        self.line.set_data(self.steps, self.losses)
        if self.steps:
            self.axes.set_xlim(0, max(self.steps[-1], 1))
            finite = [v for v in self.losses if v == v and abs(v) != float("inf")]
            if finite:
                lo, hi = min(finite), max(finite)
                pad = 0.05 * (hi - lo) or 0.05 * abs(hi) or 0.1
                self.axes.set_ylim(lo - pad, hi + pad)
        self.canvas.draw_idle()
