"""What a round reports, and the new version's own record.

:class:`RoundReport` is the self-check's verdict and what the round did (the dock's status
line and plot, the CLI's output, ``record["self_check"]``); :func:`describe_version` writes
the new version's record so that it describes the new model, never its parent.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import asdict, dataclass
from typing import Any

from .. import __version__
from ..model import UNet


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
    loss_first: float
    loss_last: float
    postprocess: dict[str, Any]
    regime: str = "adapt"  # "refine": the parent already segments the corrections well
    by_pixels: bool = False  # the scores tied within the margin; the pixels decided
    scale: float = 1.0  # the new version's input scale
    object_diameter: float | None = None  # median object diameter in the corrections (px)
    rescaled: bool = False  # the round changed the input scale

    def summary(self) -> str:
        """One line for the dock's status and the CLI, e.g. "F1 0.41 -> 0.83"."""
        where = "held-back parts of your corrections" if self.held_back else \
            "your corrections (trained on; no part held back)"
        verdict = "better" if self.accepted else "NOT better: keep the parent"
        if self.by_pixels:
            verdict += (": a tie, decided by the pixels" if self.accepted else
                        ": a tie, and the pixels did not favour it")
        extra = "; input inverted (dark objects on bright)" if self.inverted else ""
        if self.rescaled:
            extra += (f"; input resampled x{self.scale:g} (your objects ~"
                      f"{self.object_diameter or 0:.0f} px)")
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
    """Replace the parent's description, data and scores by the new version's own."""
    old = parent.record
    parent_name = old.get("name") or old.get("source")
    history = list(old.get("history") or []) + [{
        "parent": parent_name, "slices": zs, "self_check": report.to_dict(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}]
    keep = {k: old[k] for k in ("predict", "expand_labels", "object_diameter") if k in old}
    if "object_diameter" not in keep and report.object_diameter:  # in the network's pixels
        keep["object_diameter"] = round(report.object_diameter * report.scale, 2)
    model.record = {
        **keep, **{k: v for k, v in model.record.items()
                   if k in ("data_shapes", "steps", "final_loss", "train_config", "date",
                            "package_version", "anchor_slices", "expand_labels")},
        "name": name or f"{parent_name}-ft",
        "annotated_slices": list(zs),
        "parent": parent_name,
        "description": (f"Fine-tuned from {parent_name} on {report.n_slices} corrected "
                        f"slice(s) {zs}" + (" (a new network, started from scratch)"
                                            if start == "scratch" else "")),
        "data": f"{report.n_slices} corrected slice(s) of the user's data: {zs}",
        "postprocess": report.postprocess,
        "self_check": report.to_dict(),
        "metrics": {"self_check_" + ("f1" if report.metric == "F1" else "adapted_rand"):
                    report.new_score, "self_check_parent": report.parent_score},
        "parent_licence": old.get("licence"),
        "history": history,
        "package_version": __version__,
    }
