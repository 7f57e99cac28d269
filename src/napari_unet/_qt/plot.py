"""A small live loss plot (matplotlib ``FigureCanvas``) for the Fine-tune dock.

It follows the napari theme, shows the raw loss and a smoothed curve (exponential moving
average), and after a round the self-check's before/after score in the title.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QSizePolicy, QVBoxLayout, QWidget

#: Shortest time between two redraws (ms): at most five a second.
REDRAW_MS = 200
#: Weight of the newest point in the smoothed curve.
SMOOTHING = 0.1


def smooth(values: list[float], alpha: float = SMOOTHING) -> np.ndarray:
    """Exponential moving average of ``values`` (NaN and inf skipped), debiased at the start."""
    out = np.empty(len(values), np.float64)
    avg, weight = 0.0, 0.0
    for i, v in enumerate(values):
        if np.isfinite(v):
            avg = (1 - alpha) * avg + alpha * v
            weight = (1 - alpha) * weight + alpha
        out[i] = avg / weight if weight else np.nan
    return out


class LossPlot(QWidget):
    """Training loss against step; redraws at most five times a second.

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
        self.redraws = 0
        self._last_draw = 0.0
        self._colors = {"text": "#bbbbbb", "line": "#999999", "raw": "#f0a030",
                        "smooth": "#f0a030"}
        # fixed margins: a constrained layout costs most of each redraw
        self.figure = Figure(figsize=(3.2, 1.8), dpi=80)
        self.figure.subplots_adjust(left=0.2, right=0.97, bottom=0.24, top=0.86)
        self.figure.patch.set_alpha(0.0)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setStyleSheet("background-color: transparent;")
        self.canvas.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.canvas.setFixedHeight(150)
        self.axes = self.figure.add_subplot()
        (self.line,) = self.axes.plot([], [], lw=0.8, alpha=0.35, label="loss")
        (self.smooth_line,) = self.axes.plot([], [], lw=1.6, label="smoothed")
        self._style()
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

    def set_theme(self, name: str) -> None:
        """Follow the napari theme ``name`` (``viewer.theme``)."""
        try:
            from napari.utils.theme import get_theme

            theme = get_theme(name)
        except (ImportError, KeyError, ValueError):
            return
        self._colors = {"text": theme.text.as_hex(), "line": theme.highlight.as_hex(),
                        "raw": theme.secondary.as_hex(), "smooth": theme.current.as_hex()}
        self._style()
        self.redraw()

    def _style(self) -> None:
        ax, c = self.axes, self._colors
        ax.set_facecolor("none")
        for spine in ax.spines.values():
            spine.set_color(c["line"])
        ax.tick_params(colors=c["text"], labelsize=8)
        ax.set_xlabel("step", color=c["text"], fontsize=8)
        ax.set_ylabel("loss", color=c["text"], fontsize=8)
        ax.title.set_color(c["text"])
        self.line.set_color(c["raw"])
        self.smooth_line.set_color(c["smooth"])

    def set_scores(self, report: Any) -> None:
        """Show the round's self-check (``RoundReport``): the parent's and the new score."""
        verdict = "better" if report.accepted else "not better"
        self.axes.set_title(f"self-check {report.metric}: {report.parent_score:.2f} -> "
                            f"{report.new_score:.2f} ({verdict})", fontsize=8,
                            color=self._colors["text"])

    def clear(self) -> None:
        """Start a new curve."""
        self.steps.clear()
        self.losses.clear()
        self.axes.set_title("")
        self.redraw()

    def add(self, step: int, loss: float) -> None:
        """Append a point; the plot is redrawn shortly (coalescing fast updates)."""
        self.steps.append(int(step))
        self.losses.append(float(loss))
        if not self.timer.isActive():
            wait = REDRAW_MS - 1000 * (time.monotonic() - self._last_draw)
            self.timer.start(int(max(0, wait)))

    def redraw(self) -> None:
        """Redraw now (the canvas paints at the next event-loop turn)."""
        self._last_draw = time.monotonic()
        self.redraws += 1
        self.line.set_data(self.steps, self.losses)
        self.smooth_line.set_data(self.steps, smooth(self.losses))
        if self.steps:
            self.axes.set_xlim(0, max(self.steps[-1], 1))
            finite = [v for v in self.losses if v == v and abs(v) != float("inf")]
            if finite:
                lo, hi = min(finite), max(finite)
                pad = 0.05 * (hi - lo) or 0.05 * abs(hi) or 0.1
                self.axes.set_ylim(lo - pad, hi + pad)
        self.canvas.draw_idle()
