"""Driving a core job: a generator that yields events and returns its result.

Every long computation of the core (prediction, a training round, the dock's jobs) is a
generator: it yields progress events and *returns* its result. The docks drive it in
napari's ``thread_worker`` (stopping it cancels), the CLI and the scripts with :func:`run`.

Every event is an :class:`Event`: a human-readable ``message`` and the ``fraction`` of the
work done (0..1; None when unknown). Three kinds flow out:
:class:`~napari_unet.inference.predict.Progress` (the tiles of a prediction),
:class:`~napari_unet.training.train.TrainEvent` (a training step, with its loss) and
:class:`Stage` (any other step of a job, e.g. "checking the polarity (bright or dark
objects)"). A consumer that only shows progress reads ``message`` and ``fraction``; one
that plots losses or counts tiles tells the kinds apart by their class.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Event(Protocol):
    """What every event of a job offers."""

    @property
    def message(self) -> str:
        """One line for a status bar or a log, e.g. ``"step 3/60: loss 0.4120 (2 s)"``."""
        ...

    @property
    def fraction(self) -> float | None:
        """The fraction of the work done, in [0, 1]; None when unknown."""
        ...


@dataclass(frozen=True)
class Stage:
    """A step of a job that is neither a prediction's tiles nor a training step.

    Attributes
    ----------
    message : str
        What the job is doing, e.g. ``"anchoring on uncorrected slice 1/3"``.
    fraction : float or None
        How far the job (or this stage) is, in [0, 1], when known.
    """

    message: str
    fraction: float | None = None


def fraction_done(done: float, total: float) -> float | None:
    """``done / total`` within [0, 1]; None when ``total`` is not positive."""
    return min(1.0, max(0.0, done / total)) if total > 0 else None


def run(gen: Generator[Any, Any, Any], on_event: Callable[[Event], None] | None = None) -> Any:
    """Drive a generator to completion, passing each event to ``on_event``; its result."""
    while True:
        try:
            ev = next(gen)
        except StopIteration as stop:
            return stop.value
        if on_event is not None:
            on_event(ev)


__all__ = ["Event", "Stage", "fraction_done", "run"]
