"""A model's record, typed: what it is, where it came from, how it was trained and checked.

On disk (model files, checkpoints, bioimage.io packages) and on the model
(``model.record``) the record stays a plain dict, so every file written before or since
reads the same. :class:`ModelRecord` is its typed view: the one place that names the
record's keys and their types. Code that reads a record for its meaning takes
``ModelRecord.of(model)``; code that writes single entries calls :func:`update_record`,
which checks the names and types. ``ModelRecord.from_dict(d).to_dict() == d`` for every
valid record: keys it does not know are kept in :attr:`ModelRecord.extra`, a key stored
as None stays None, and the order of the keys is kept.
"""

from __future__ import annotations

import numbers
import types
import typing
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, fields
from typing import Any


@dataclass
class ModelRecord:
    """A model's training record. None: not recorded.

    Attributes
    ----------
    name, description : str or None
        Display name and one-line description.
    data : str or None
        What it was trained on, e.g. ``"2 corrected slice(s) of 2 images: a.tif, b.tif[0]"``.
    parent : str or None
        The version it was fine-tuned from (None: trained from scratch).
    licence, parent_licence : str or None
        Licence note of the model, and of its parent.
    source : str or None
        The file it was loaded from (this machine only: never written to a file).
    bioimageio : bool or None
        True for a foreign bioimage.io model (prediction only).
    postprocess : dict or None
        Tuned post-processing (:class:`napari_unet.inference.postprocess.PostprocessConfig`).
    predict : dict or None
        Prediction settings, e.g. ``{"tta": True}``.
    expand_labels : int or None
        Label expansion of its training targets (fine-tuning keeps it).
    object_diameter : float or None
        Median diameter (px, in the network's pixels) of the objects it learned.
    annotated_slices : list of int or None
        The slices trained on in its last training.
    data_shapes : list of list of int or None
        The shapes of the images trained on.
    steps : int or None
        Steps of its last training.
    final_loss : float or None
        Smoothed loss at the last step.
    train_config : dict or None
        :class:`napari_unet.training.train_config.TrainConfig` of the last training.
    anchor_slices : int or None
        Uncorrected slices that anchored the last training.
    self_check : dict or None
        The last round's report (:class:`napari_unet.training.report.RoundReport`).
    metrics : dict or None
        Scores (the self-check's, or a starter's test figures).
    history : list of dict or None
        The fine-tuning lineage, one entry per round.
    date, package_version : str or None
        When and by which napari-unet version it was written.
    wall_time_s : float or None
        Training time of a starter model.
    seed : int or None
        Seed of a starter model's training.
    stages : list of dict or None
        A starter model's training stages.
    precision : str or None
        Precision a starter model was trained in.
    extra : dict
        Keys this class does not know, kept as they are.
    """

    name: str | None = None
    description: str | None = None
    data: str | None = None
    parent: str | None = None
    licence: str | None = None
    parent_licence: str | None = None
    source: str | None = None
    bioimageio: bool | None = None
    postprocess: dict[str, Any] | None = None
    predict: dict[str, Any] | None = None
    expand_labels: int | None = None
    object_diameter: float | None = None
    annotated_slices: list[int] | None = None
    data_shapes: list[list[int]] | None = None
    steps: int | None = None
    final_loss: float | None = None
    train_config: dict[str, Any] | None = None
    anchor_slices: int | None = None
    self_check: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    history: list[dict[str, Any]] | None = None
    date: str | None = None
    package_version: str | None = None
    wall_time_s: float | None = None
    seed: int | None = None
    stages: list[dict[str, Any]] | None = None
    precision: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: The keys of the dict it was read from, in order (kept by :meth:`to_dict`).
    _keys: tuple[str, ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in _known():
            _check(name, getattr(self, name))
        if not isinstance(self.extra, dict):
            raise ValueError(f"record: extra must be a dict, got {type(self.extra).__name__}")
        clash = sorted(set(self.extra) & set(_known()))
        if clash:
            raise ValueError(f"record: {clash[0]} is a field, not an extra key")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelRecord:
        """The record of a stored dict: missing keys are None, unknown ones go to ``extra``.

        Raises
        ------
        ValueError
            One line, when ``d`` is not a dict or a known key has a value of the wrong type.
        """
        if not isinstance(d, Mapping):
            raise ValueError(f"record must be a dict, got {type(d).__name__}")
        known = _known()
        bad = [k for k in d if not isinstance(k, str)]
        if bad:
            raise ValueError(f"record: keys must be strings, got {bad[0]!r}")
        return cls(**{k: v for k, v in d.items() if k in known},
                   extra={k: v for k, v in d.items() if k not in known}, _keys=tuple(d))

    @classmethod
    def of(cls, model: Any) -> ModelRecord:
        """The record of ``model`` (``model.record``; empty for objects without one).

        The values are shared with ``model.record``, not copied: read them, do not modify.
        """
        return cls.from_dict(getattr(model, "record", None) or {})

    def to_dict(self, *, keep_source: bool = True, keep_none: Collection[str] = ()) -> dict[str, Any]:
        """The plain dict to store: the keys read, in their order, then the fields set.

        Parameters
        ----------
        keep_source : bool
            Include ``source`` (False for files: it is a path on this machine).
        keep_none : collection of str
            Fields written even when None (not only those read as None).

        Returns
        -------
        dict
            The record; ``ModelRecord.from_dict(d).to_dict() == d`` (same key order too).
        """
        known = _known()
        values = {n: getattr(self, n) for n in known}
        present = set(self._keys) | set(keep_none)
        order = [*self._keys, *known, *self.extra]
        out: dict[str, Any] = {}
        for k in order:
            if k in out or (k == "source" and not keep_source):
                continue
            if k in self.extra:
                out[k] = self.extra[k]
            elif k in values and (values[k] is not None or k in present):
                out[k] = values[k]
        return out


def update_record(model: Any, *, only_missing: bool = False, **entries: Any) -> None:
    """Set entries of ``model.record`` (a plain dict), checked as :class:`ModelRecord` fields.

    Parameters
    ----------
    model : object
        A model with a ``record`` dict.
    only_missing : bool
        Set only the keys the record does not hold yet (as :meth:`dict.setdefault`).
    **entries
        Field names and values.

    Raises
    ------
    ValueError
        One line: an unknown field or a value of the wrong type (nothing is set then).
    """
    known = _known()
    for name, value in entries.items():
        if name not in known:
            raise ValueError(f"record: no field {name!r}")
        _check(name, value)
    record = model.record
    for name, value in entries.items():
        if not (only_missing and name in record):
            record[name] = value


def _known() -> dict[str, Any]:
    """Field name -> type hint, for the record's own keys (not ``extra``), in field order."""
    return _FIELDS


def _accepts(kind: Any, value: Any) -> bool:
    """Whether ``value`` is of ``kind`` (one member of a field's type; containers: outer type)."""
    origin = typing.get_origin(kind) or kind
    if origin is bool:
        return isinstance(value, bool)
    if origin is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if origin is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if origin is list:
        return isinstance(value, (list, tuple))
    if origin is dict:
        return isinstance(value, Mapping)
    return isinstance(value, origin)


def _check(name: str, value: Any) -> None:
    """Raise a one-line ValueError when ``value`` is not of field ``name``'s type."""
    hint = _known()[name]
    kinds = [k for k in typing.get_args(hint) if k is not type(None)] \
        if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union else [hint]
    if value is None or any(_accepts(k, value) for k in kinds):
        return
    want = " or ".join(getattr(typing.get_origin(k), "__name__", None) or k.__name__
                       for k in kinds)
    shown = repr(value)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    raise ValueError(f"record: {name} must be {want} or None, got {type(value).__name__} {shown}")


_HINTS = typing.get_type_hints(ModelRecord)
#: The record's own keys -> their type hints.
_FIELDS: dict[str, Any] = {f.name: _HINTS[f.name] for f in fields(ModelRecord)
                           if f.name not in ("extra", "_keys")}

__all__ = ["ModelRecord", "update_record"]
