"""Driving a core job: a generator that yields events and returns its result.

Every long computation of the core (prediction, a training round, the dock's jobs) is a
generator: it yields progress events (:class:`~napari_unet.inference.predict.Progress`,
:class:`~napari_unet.training.train.TrainEvent`, stage strings) and *returns* its result.
The docks drive it in napari's ``thread_worker`` (stopping it cancels), the CLI and the
scripts with :func:`run`.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any


def run(gen: Generator, on_event: Callable[[Any], None] | None = None) -> Any:
    """Drive a generator to completion, passing each event to ``on_event``; its result."""
    while True:
        try:
            ev = next(gen)
        except StopIteration as stop:
            return stop.value
        if on_event is not None:
            on_event(ev)
