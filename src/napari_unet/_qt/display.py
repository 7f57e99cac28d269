"""Alias of :mod:`napari_unet._display`, which holds the virtual X display (no Qt in it).

Kept only until ``benchmarks/bench_gui.py`` imports ``napari_unet._display``; then delete.
"""

from .._display import start_xvfb, stop_xvfb, virtual_display

__all__ = ["start_xvfb", "stop_xvfb", "virtual_display"]
