"""The ``napari-unet train`` subcommand: one round of the loop (:mod:`napari_unet.training.loop`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import numpy as np

from .image_files import read_array
from .model_record import update_record
from .outputs import check_output


def parse_slices(text: str | None) -> list[int] | None:
    """``--slices 0,3`` as a list of ints (None when not given)."""
    if not text:
        return None
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--slices must be comma-separated integers, got {text!r}") from None


def bar_interval() -> float:
    """Seconds between progress-bar redraws: a log file (not a terminal) gets one in 10 s."""
    return 0.1 if sys.stderr.isatty() else 10.0


def parse_channel(text: str) -> str | int:
    """``--channel``: an index, or ``auto``/``gray``."""
    return int(text) if text.lstrip("-").isdigit() else text


IMAGE_SUFFIXES = (".tif", ".tiff", ".zarr")


def _listing(folder: Path) -> list[Path]:
    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{folder} holds no .tif, .tiff or .zarr file")
    return files


def _match(image: Path, labels: list[Path]) -> Path:
    """The labels file of ``image``: the same stem, or the stem and a suffix (``_labels``)."""
    same = [f for f in labels if f.stem == image.stem]
    if same:
        return same[0]
    longer = [f for f in labels if f.stem.startswith(image.stem)
              and f.stem[len(image.stem)] in "_-. "]
    if len(longer) != 1:
        raise ValueError(f"no labels file matches {image.name} (expected {image.stem}.tif or "
                         f"{image.stem}_labels.tif; found {len(longer)} candidates)")
    return longer[0]


def input_pairs(images: list[str], labels: list[str]) -> list[tuple[Path, Path]]:
    """``--images``/``--labels``: files given pairwise, or two folders matched by name."""
    ims, labs = [Path(x).expanduser() for x in images], [Path(x).expanduser() for x in labels]
    if len(ims) != len(labs):
        raise ValueError(f"--images lists {len(ims)} path(s) but --labels {len(labs)}: give "
                         "one labels file per image")
    pairs = []
    for im, lab in zip(ims, labs, strict=True):
        folders = (im.is_dir() and im.suffix.lower() != ".zarr",
                   lab.is_dir() and lab.suffix.lower() != ".zarr")
        if folders[0] != folders[1]:
            raise ValueError(f"{im} and {lab}: give two files or two folders")
        if folders[0]:
            if im.resolve() == lab.resolve():
                raise ValueError(f"--images and --labels are the same folder {im}: put the "
                                 "labels in a folder of their own")
            found = _listing(lab)
            pairs += [(f, _match(f, found)) for f in _listing(im)]
        else:
            pairs.append((im, lab))
    return pairs


def _gather(pairs: list[tuple[Path, Path]], model: Any, a: argparse.Namespace) -> Any:
    """Several images: :func:`napari_unet.training.pairs.gather_pairs` of the files."""
    from .inference.inputs import to_model_channels
    from .training.pairs import ImagePair, gather_pairs

    items = []
    for ip, lp in pairs:
        im, axis = to_model_channels(read_array(ip), model.in_channels, a.channel_axis,
                                     parse_channel(a.channel))
        items.append(ImagePair(im, read_array(lp), ip.name, lp.name, axis))
    return gather_pairs(items, model.in_channels, a.ignore_label)


def _run_round(gen: Generator) -> Any:
    """Drive :func:`napari_unet.training.loop.finetune_round`: stage lines and a step bar."""
    from tqdm import tqdm

    from .jobs import run
    from .training.train import TrainEvent

    bar: list[Any] = []

    def show(ev: Any) -> None:
        if isinstance(ev, TrainEvent):
            if not bar:
                bar.append(tqdm(total=ev.steps, desc="train", unit="step", file=sys.stderr,
                                mininterval=bar_interval()))
            bar[0].set_postfix(loss=f"{ev.loss:.4f}", refresh=False)
            bar[0].update(ev.step - bar[0].n)
        elif "predicting" not in ev.message and "checking held-back" not in ev.message:
            if bar:
                bar.pop().close()
            print(ev.message, file=sys.stderr)

    try:
        return run(gen, show)
    finally:
        if bar:
            bar[0].close()


def cmd_train(a: argparse.Namespace) -> int:
    """Run one round on the corrected slices and write the new model (0 on success)."""
    pairs = input_pairs(a.images, a.labels)
    check_output(a.output, inputs=[*a.images, *a.labels, a.model, a.resume, a.checkpoint],
                 overwrite=a.overwrite)
    _check_train_args(a, len(pairs))
    from .training.loop import finetune_round

    model = _start_model(a)
    cfg = _round_config(a)
    chosen = parse_slices(a.slices)
    images, labels, axis, anchors, got = _round_inputs(pairs, model, a, chosen)
    result = _run_round(finetune_round(model, images, labels, cfg, slices=chosen,
                                       channel_axis=axis, anchors=anchors,
                                       name=Path(a.output).stem, resume=a.resume))
    if len(pairs) > 1:
        update_record(result.model, data=got.data_note())
    _report_round(result, a, model)
    return 0


def _check_train_args(a: argparse.Namespace, n_pairs: int) -> None:
    """Reject out-of-range ``train`` options before anything is loaded.

    Parameters
    ----------
    a : argparse.Namespace
        The parsed ``train`` arguments.
    n_pairs : int
        How many image/labels pairs were given.

    Raises
    ------
    ValueError
        ``--slices`` with several pairs, or ``--steps``, ``--lr``, ``--anchor-weight`` or
        ``--tile`` out of range.
    """
    if n_pairs > 1 and a.slices:
        raise ValueError("--slices needs one --images/--labels pair; with several, every "
                         "slice holding labels is a corrected one")
    if a.steps is not None and a.steps < 1:
        raise ValueError(f"--steps must be at least 1, got {a.steps} (leave it out for the "
                         "automatic count)")
    for flag, value in (("--lr", a.lr), ("--anchor-weight", a.anchor_weight)):
        if value is not None and not (np.isfinite(value) and 0 <= value <= 10):
            raise ValueError(f"{flag} must be a finite number in [0, 10], got {value}")
    if a.lr is not None and a.lr == 0:
        raise ValueError("--lr must be above 0")
    if a.tile is not None and not 16 <= a.tile <= 4096:
        raise ValueError(f"--tile must be between 16 and 4096 px, got {a.tile}")


def _start_model(a: argparse.Namespace) -> Any:
    """The network the round starts from.

    Parameters
    ----------
    a : argparse.Namespace
        The parsed ``train`` arguments (``--model``, ``--resume``, ``--seed``).

    Returns
    -------
    UNet
        ``--model``; else the network of the ``--resume`` checkpoint; else a new network
        of the default architecture, seeded with ``--seed``.
    """
    from .model import UNet
    from .model_files import load_checkpoint, load_model
    from .training.train import DEFAULT_ARCHITECTURE

    if a.model:
        return load_model(a.model)
    if a.resume:
        return load_checkpoint(a.resume)["model"]  # same architecture as the checkpoint
    import torch

    torch.manual_seed(a.seed)
    model = UNet(**DEFAULT_ARCHITECTURE)
    update_record(model, name="new network")
    return model


def _round_config(a: argparse.Namespace) -> Any:
    """The :class:`~napari_unet.training.loop.RoundConfig` the options ask for.

    Parameters
    ----------
    a : argparse.Namespace
        The parsed ``train`` arguments.

    Returns
    -------
    RoundConfig
        Polarity, start, hold-out and scale of the round, and its training settings
        (options left out keep their defaults).
    """
    from .training.denoise import SmoothConfig
    from .training.loop import RoundConfig
    from .training.scale import ScaleConfig

    cfg = RoundConfig(polarity=a.polarity if a.model else "keep",
                      start="scratch" if a.from_scratch else "parent",
                      holdout=a.holdout, scale=ScaleConfig(mode=a.scale),
                      smooth=SmoothConfig(mode=a.smoothing))
    t = cfg.train
    t.steps, t.device, t.seed, t.checkpoint_path = a.steps or 0, a.device, a.seed, a.checkpoint
    t.ignore_label, t.expand_labels, t.anchor_weight = (a.ignore_label, a.expand_labels,
                                                        a.anchor_weight)
    for key in ("lr", "optimizer", "schedule", "tile"):
        if getattr(a, key) is not None:
            setattr(t, key, getattr(a, key))
    if a.no_augment:
        t.augment.enabled = False
    return cfg


def _round_inputs(
    pairs: list[tuple[Path, Path]], model: Any, a: argparse.Namespace, chosen: list[int] | None
) -> tuple[Any, Any, int | None, list[np.ndarray] | None, Any]:
    """Read the images and labels of the round, and pick the anchor slices.

    Parameters
    ----------
    pairs : list of tuple of Path
        The image and labels files.
    model : UNet
        The start model (its input channels).
    a : argparse.Namespace
        The parsed ``train`` arguments.
    chosen : list of int, optional
        The ``--slices`` given (one pair only).

    Returns
    -------
    tuple
        Images, labels, their channel axis, the anchor slices (or None) and, with several
        pairs, the gathered pairs (else None).
    """
    from .inference.inputs import to_model_channels
    from .training.pairs import pick_slices

    if len(pairs) > 1:
        got = _gather(pairs, model, a)
        anchors = (got.anchors or None) if a.model else None
        return got.images, got.labels, 0, anchors, got
    anchors = None
    images, labels = read_array(pairs[0][0]), read_array(pairs[0][1])
    images, axis = to_model_channels(images, model.in_channels, a.channel_axis,
                                     parse_channel(a.channel))
    if a.model and axis is None and np.ndim(images) == 3 and np.ndim(labels) == 3:
        # as in the Fine-tune dock: three uncorrected slices anchor the fine-tuning
        from .training.train import annotated_slices

        done = chosen or annotated_slices(labels, a.ignore_label)
        anchors = [np.asarray(images[z]) for z in pick_slices(np.shape(images)[0], done)]
    return images, labels, axis, anchors, None


def _report_round(result: Any, a: argparse.Namespace, parent: Any) -> None:
    """Print the self-check and the loss, and write the model to keep.

    A round the self-check rejects writes ``--model``'s weights (as the Fine-tune dock keeps
    the parent), unless ``--write-rejected`` asks for the trained ones.

    Parameters
    ----------
    result : RoundResult
        What :func:`napari_unet.training.loop.finetune_round` returned.
    a : argparse.Namespace
        The parsed ``train`` arguments (``--model``, ``--output``, ``--write-rejected``).
    parent : UNet
        The model the round started from.
    """
    from .model_files import save_model_or_rescue
    from .training.report import kept_version

    rep = result.report
    print(f"self-check {rep.summary()}")
    print(f"loss on random crops of your corrections, first -> last tenth of {rep.steps} "
          f"steps: {rep.loss_first:.4f} -> {rep.loss_last:.4f} ({rep.seconds:.0f} s; the "
          "self-check, not the loss, says whether the model improved)")
    rejected = not result.accepted and a.model
    out = result.model if a.write_rejected or not rejected else kept_version(parent, result)
    written, warning = save_model_or_rescue(out, a.output)
    if warning:
        print(f"WARNING: {warning}", file=sys.stderr)
    if rejected and a.write_rejected:
        print(f"WARNING: the new model is not better than {a.model} on your corrections; "
              f"{a.output} holds it (--write-rejected), but keep using {a.model} unless you "
              "check it yourself", file=sys.stderr)
    elif rejected:
        print(f"the trained model is not better than {a.model} on your corrections: "
              f"{a.output} holds {a.model}'s weights and settings (--write-rejected writes "
              "the trained ones)", file=sys.stderr)
    print(f"wrote {written}")


def add_train_parser(sub: Any, output_flags: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add the ``train`` subcommand to the CLI's subparsers."""
    s = sub.add_parser("train", help="train or fine-tune on annotated slices (one round, "
                       "checked against the starting model)")
    s.add_argument("--images", required=True, nargs="+",
                   help="image files (or folders), one per --labels file")
    s.add_argument("--labels", required=True, nargs="+",
                   help="labels files (or folders, matched to the images by name: "
                        "NAME.tif or NAME_labels.tif)")
    s.add_argument("--slices", help="the corrected slices, e.g. 0,3 (default: every slice "
                   "holding labels)")
    s.add_argument("--model", help="start model (default: a new network)")
    s.add_argument("--from-scratch", action="store_true",
                   help="train a new network of the --model's shape instead of fine-tuning")
    s.add_argument("--steps", type=int, default=None,
                   help="optimiser steps (default: scaled to the corrected data)")
    s.add_argument("--lr", type=float, default=None, help="learning rate (default 5e-4)")
    s.add_argument("--optimizer", default=None, choices=["adamw", "adam", "sgd"],
                   help="default adamw")
    s.add_argument("--schedule", default=None, choices=["cosine", "constant"])
    s.add_argument("--tile", type=int, default=None, help="training crop in px (default 128)")
    s.add_argument("--polarity", default="auto", choices=["auto", "keep", "invert"],
                   help="auto: invert the input when the corrections show dark objects on a "
                        "bright background to a model trained the other way round")
    s.add_argument("--scale", default="auto",
                   help="auto: resample the input when the corrected objects' size differs "
                        "from the size the model learned; keep; or a factor (0.5: objects "
                        "twice as large as the model's)")
    s.add_argument("--smoothing", default="auto", choices=["auto", "keep"],
                   help="auto: smooth the input (a Gaussian of 1 px) when the model segments "
                        "your noisy corrections clearly better so; keep: the model's own")
    s.add_argument("--holdout", type=float, default=0.25,
                   help="area fraction of each corrected slice held back for the self-check")
    s.add_argument("--channel-axis", type=int, default=None,
                   help="axis holding colour channels (RGB is found by itself)")
    s.add_argument("--channel", default="auto",
                   help="auto (gray for 1-channel models), gray, or a channel index")
    s.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--ignore-label", type=int, default=None)
    s.add_argument("--expand-labels", type=int, default=None,
                   help="grow instances by up to N px before making the targets: thin lines "
                        "between cells that tile the image (EM: 12; default: the model's)")
    s.add_argument("--anchor-weight", type=float, default=1.0,
                   help="with --model and a stack: keep the model's predictions on three "
                        "uncorrected slices with this weight (0: off)")
    s.add_argument("--no-augment", action="store_true")
    s.add_argument("--write-rejected", action="store_true",
                   help="write the trained model even when the self-check finds it no better "
                        "than --model (default: write --model's weights, as the dock keeps "
                        "the parent)")
    s.add_argument("--checkpoint", help="save a resumable checkpoint here")
    s.add_argument("--resume", help="resume from this checkpoint")
    s.add_argument("-o", "--output", required=True)
    output_flags(s)
    s.set_defaults(func=cmd_train)

