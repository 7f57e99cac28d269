"""What a round reports, and the new version's own record.

:class:`RoundReport` is the self-check's verdict and what the round did (the dock's status
line and plot, the CLI's output, ``record["self_check"]``); :func:`describe_version` writes
the new version's record so that it describes the new model, never its parent.
"""

from __future__ import annotations

import copy
import datetime as _dt
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .. import __version__
from ..model import UNet
from ..model_record import ModelRecord


@dataclass
class RoundReport:
    """What a round did and how the new version compares with its parent."""

    metric: str  # "F1" (higher is better) or "adapted Rand error" (lower is better)
    parent_score: float
    new_score: float
    accepted: bool
    held_back: bool
    inverted: bool
    anchored: int
    steps: int
    seconds: float
    n_slices: int
    loss_first: float  # the corrections' loss (no anchoring term), first 10 % of the steps
    loss_last: float  # and last 10 %
    postprocess: dict[str, Any]
    regime: str = "adapt"  # "refine": the parent already segments the corrections well
    by_pixels: bool = False  # the scores tied within the margin; the pixels decided
    scale: float = 1.0  # the new version's input scale
    object_diameter: float | None = None  # median object diameter in the corrections (px)
    rescaled: bool = False  # the round changed the input scale
    whole_slices: int = 0  # corrected slices held back whole (none trained on)
    tied: bool = False  # the scores tied within the margin
    blended: bool = False  # the new weights went most of the way back to the parent's
    smooth: float = 0.0  # the Gaussian width (input px) the new version smooths its input with
    smoothed: bool = False  # the round changed the smoothing
    untrained: bool = False  # the new input alone beat the trained weights: the parent's kept

    def summary(self) -> str:
        """One line for the dock's status and the CLI, e.g. "F1 0.41 -> 0.83"."""
        where = "held-back parts of your corrections" if self.held_back else \
            "your corrections (trained on; no part held back)"
        if self.whole_slices:
            where = (f"{self.whole_slices} corrected slice(s) held back (never trained on)")
        verdict = "better" if self.accepted else "NOT better: keep the parent"
        if self.by_pixels:
            verdict += (": a tie, decided by the pixels" if self.accepted else
                        ": a tie, and the pixels did not favour it")
        elif self.tied:
            verdict = ("as good, a tie: kept, a blend mostly of the parent's weights"
                       if self.accepted else "NOT better (a tie): keep the parent")
        extra = "; input inverted (dark objects on bright)" if self.inverted else ""
        if self.rescaled:
            extra += (f"; input resampled x{self.scale:g} (your objects ~"
                      f"{self.object_diameter or 0:.0f} px)")
        if self.smoothed:
            extra += (f"; input smoothed (Gaussian of {self.smooth:g} px: noisy images)"
                      if self.smooth else "; input no longer smoothed")
        if self.untrained:
            extra += "; training did not beat the new input alone: the parent's weights kept"
        return (f"on {where}: {self.metric} {self.parent_score:.3f} -> {self.new_score:.3f} "
                f"({verdict}){extra}")

    def to_dict(self) -> dict[str, Any]:
        """Plain-type dict for the model record."""
        return asdict(self)


@dataclass
class RoundResult:
    """The new version, whether it beat its parent, and the report."""

    model: UNet
    accepted: bool
    report: RoundReport


def describe_version(model: UNet, parent: UNet, report: RoundReport, zs: list[int],
              name: str | None, start: str) -> None:
    """Replace the parent's description, data and scores by the new version's own.

    The new record keeps the parent's prediction settings, label expansion and object size
    (the trained model's expansion when training recorded one) and what training recorded
    about itself (shapes, steps, loss, settings, date, anchors); everything else describes
    the new version: name, parent, lineage (``history``), self-check and metrics.
    """
    old, trained = ModelRecord.of(parent), ModelRecord.of(model)
    parent_name = old.name or old.source
    history = list(old.history or []) + [{
        "parent": parent_name, "slices": zs, "self_check": report.to_dict(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}]
    diameter = old.object_diameter
    if diameter is None and report.object_diameter:  # in the network's pixels
        diameter = round(report.object_diameter * report.scale, 2)
    metric = "self_check_" + ("f1" if report.metric == "F1" else "adapted_rand")
    new = ModelRecord(
        name=name or f"{parent_name}-ft",
        description=(f"Fine-tuned from {parent_name} on {report.n_slices} corrected "
                     f"slice(s) {zs}" + (" (a new network, started from scratch)"
                                         if start == "scratch" else "")),
        data=f"{report.n_slices} corrected slice(s) of the user's data: {zs}",
        parent=parent_name, parent_licence=old.licence,
        postprocess=report.postprocess, predict=old.predict,
        expand_labels=old.expand_labels if trained.expand_labels is None else trained.expand_labels,
        object_diameter=diameter, annotated_slices=list(zs),
        data_shapes=trained.data_shapes, steps=trained.steps, final_loss=trained.final_loss,
        train_config=trained.train_config, anchor_slices=trained.anchor_slices,
        self_check=report.to_dict(),
        metrics={metric: report.new_score, "self_check_parent": report.parent_score},
        history=history, date=trained.date, package_version=__version__)
    model.record = new.to_dict(keep_none=("parent", "parent_licence"))


def kept_version(parent: UNet, result: RoundResult) -> UNet:
    """The model the loop leaves the user: the new version, or its parent when it is no better.

    A rejected round's parent comes back as a copy whose record says so (its weights, input
    settings and thresholds are the parent's; ``history`` gains the rejected round), as the
    Fine-tune dock keeps the parent selected. ``result.model`` itself when accepted.
    """
    if result.accepted:
        return result.model
    kept = copy.deepcopy(parent)
    rec = ModelRecord.of(parent)
    entry = {"parent": rec.name or rec.source, "rejected": True,
             "self_check": result.report.to_dict(),
             "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    kept.record = {**parent.record, "history": list(rec.history or []) + [entry]}
    return kept


def loss_ends(losses: list[float]) -> tuple[float, float]:
    """Mean loss of the first and of the last 10 % of the steps (NaN without steps)."""
    if not losses:
        return float("nan"), float("nan")
    n = max(1, len(losses) // 10)
    return float(np.mean(losses[:n])), float(np.mean(losses[-n:]))
