"""Command line: ``napari-unet predict|weights|train|models|evaluate``.

Every subcommand calls the same core functions as the napari widgets and drives the same
progress generators, here with tqdm.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .files import read_array, write_array


def _drive(gen: Generator, desc: str, total: int | None = None, loss: bool = False) -> Any:
    """Run a core generator to completion with a tqdm bar; return its result."""
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="step" if loss else "tile", file=sys.stderr)
    try:
        while True:
            try:
                ev = next(gen)
            except StopIteration as stop:
                return stop.value
            if loss:
                bar.total = ev.steps
                bar.set_postfix(loss=f"{ev.loss:.4f}")
                bar.update(ev.step - bar.n)
            else:
                bar.total = ev.total
                bar.update(ev.done - bar.n)
    finally:
        bar.close()


def _slices(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--slices must be comma-separated integers, got {text!r}") from None


def _cmd_predict(a: argparse.Namespace) -> int:
    from .io import load_model
    from .largedata import is_large, predict_to_store
    from .postprocess import labels_from_probabilities, postprocess_settings
    from .predict import predict_iter

    model = load_model(a.model)
    image = read_array(a.input)
    pp = postprocess_settings(model)
    pp.update({k: v for k, v in (("threshold", a.threshold), ("watershed", a.watershed),
                                 ("min_size", a.min_size), ("fill", a.fill),
                                 ("seed_threshold", a.seed_threshold)) if v is not None})
    if is_large(image):
        unsupported = [flag for flag, v in (("--slices", a.slices), ("--probabilities",
                       a.probabilities), ("--channel-axis", a.channel_axis),
                       ("--watershed", a.watershed), ("--min-size", a.min_size),
                       ("--fill", a.fill), ("--seed-threshold", a.seed_threshold)) if v]
        if unsupported:
            raise ValueError(f"{', '.join(unsupported)} cannot be used with a larger-than-memory "
                             "(zarr) input, which is predicted chunk by chunk into a mask")
        predict_to_store(model, image, a.output, device=a.device, tile=a.tile, tta=a.tta,
                         threshold=pp["threshold"], precision=a.precision)
        print(f"wrote {a.output} (foreground mask, streamed chunk by chunk)")
        return 0
    res = _drive(predict_iter(model, image, slices=_slices(a.slices), device=a.device,
                              tile=a.tile, tta=a.tta, channel_axis=a.channel_axis,
                              precision=a.precision), "predict")
    labels = labels_from_probabilities(res.probabilities, **pp)
    dtype = np.uint16 if labels.max() < 2**16 else np.uint32
    write_array(a.output, labels.astype(dtype))
    if a.probabilities:
        write_array(a.probabilities, res.probabilities)
    print(f"wrote {a.output} ({labels.max()} objects, device {res.device}, {res.precision})")
    return 0


def _cmd_weights(a: argparse.Namespace) -> int:
    from .weights import border_distances, border_weight_map, separation_borders

    labels = read_array(a.labels)
    w = border_weight_map(labels, w0=a.w0, sigma=a.sigma, class_balance=not a.no_class_balance)
    write_array(a.output, w.astype(np.float32))
    if a.d1 or a.d2:
        # distances to the separated objects: the ones the border term of w uses
        d1, d2 = border_distances(separation_borders(labels))
        if a.d1:
            write_array(a.d1, d1)
        if a.d2:
            write_array(a.d2, d2)
    print(f"wrote {a.output}: w in [{float(w.min()):.3g}, {float(w.max()):.3g}]")
    return 0


def _cmd_train(a: argparse.Namespace) -> int:
    from .io import load_checkpoint, load_model, save_model
    from .model import UNet
    from .train import DEFAULT_ARCHITECTURE, TrainConfig, annotated_slices, fine_tune

    images, labels = read_array(a.images), read_array(a.labels)
    if a.model:
        model = load_model(a.model)
    elif a.resume:
        model = load_checkpoint(a.resume)["model"]  # same architecture as the checkpoint
    else:
        model = UNet(**DEFAULT_ARCHITECTURE)
    cfg = TrainConfig(steps=a.steps, lr=a.lr, optimizer=a.optimizer, schedule=a.schedule,
                      device=a.device,
                      seed=a.seed, tile=a.tile, checkpoint_path=a.checkpoint,
                      ignore_label=a.ignore_label, expand_labels=a.expand_labels,
                      anchor_weight=a.anchor_weight)
    if a.no_augment:
        cfg.augment.enabled = False
    free = None
    if a.model and np.ndim(images) == 3 and np.ndim(labels) == 3:
        # as in the Fine-tune dock: three uncorrected slices anchor the fine-tuning, then
        # filling models get their seed threshold recalibrated on them
        from .calibrate import recalibrate, uncorrected_slices

        done = _slices(a.slices) or annotated_slices(labels, a.ignore_label)
        free = uncorrected_slices(images, done)
    model = _drive(fine_tune(model, images, labels, cfg, slices=_slices(a.slices),
                             resume=a.resume, anchors=free), "train", total=a.steps, loss=True)
    model.record["name"] = Path(a.output).stem
    if free:
        cal = recalibrate(model.eval(), load_model(a.model), free, device=a.device)
        if cal:
            print(f"seed threshold {cal['previous_threshold']} -> {cal['threshold']} "
                  f"(recalibrated on {len(free)} uncorrected slices)")
    save_model(model, a.output)
    print(f"wrote {a.output} (final loss {model.record.get('final_loss', float('nan')):.4f})")
    return 0


def _cmd_models(a: argparse.Namespace) -> int:
    from .io import list_builtin_models, load_model

    names = list_builtin_models()
    if not names:
        print("no built-in models installed")
    for name in names:
        m = load_model(name)
        c = m.config
        print(f"{name}\tdepth={c.depth} base={c.base_channels} padding={c.padding} "
              f"in={c.in_channels} classes={','.join(c.class_names)}\t"
              f"{m.record.get('description', '')}")
    return 0


def _cmd_evaluate(a: argparse.Namespace) -> int:
    from .metrics import evaluate_em, evaluate_nuclei

    truth, pred = read_array(a.truth), read_array(a.pred)
    result = evaluate_em(truth, pred) if a.kind == "em" else evaluate_nuclei(truth, pred)
    print(json.dumps(result, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with all subcommands."""
    p = argparse.ArgumentParser(prog="napari-unet", description="U-Net segmentation: predict, "
                                "border weights, fine-tuning, evaluation.")
    p.add_argument("--version", action="version", version=f"napari-unet {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("predict", help="segment an image or stack (TIFF or zarr)")
    s.add_argument("input")
    s.add_argument("-o", "--output", required=True, help="labels file (.tif or .zarr)")
    s.add_argument("--model", default="nuclei-fluorescence", help="built-in name or file")
    s.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    s.add_argument("--tile", type=int, default=None, help="input tile size in px")
    s.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="average the 8 flips/rotations (default: the model's recommendation)")
    s.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto",
                   help="auto: bf16 on GPUs and on CPUs with AMX units, else fp32")
    s.add_argument("--probabilities", help="also write per-class probabilities here")
    s.add_argument("--slices", help="only these slices of a stack, e.g. 3,4")
    s.add_argument("--threshold", type=float, default=None,
                   help="foreground threshold (default: the model's tuned value, else 0.5)")
    s.add_argument("--watershed", action=argparse.BooleanOptionalAction, default=None,
                   help="grow objects over predicted borders (default: the model's setting)")
    s.add_argument("--min-size", type=int, default=None, help="drop smaller objects (px)")
    s.add_argument("--seed-threshold", type=float, default=None,
                   help="split objects holding several cores above this probability "
                        "(default: the model's setting)")
    s.add_argument("--fill", action=argparse.BooleanOptionalAction, default=None,
                   help="grow objects over all background, a partition as for EM cells "
                        "(default: the model's setting)")
    s.add_argument("--channel-axis", type=int, default=None)
    s.set_defaults(func=_cmd_predict)

    s = sub.add_parser("weights", help="border weight map (Eq. 2) of a label image")
    s.add_argument("labels")
    s.add_argument("-o", "--output", required=True)
    s.add_argument("--w0", type=float, default=10.0)
    s.add_argument("--sigma", type=float, default=5.0)
    s.add_argument("--d1")
    s.add_argument("--d2")
    s.add_argument("--no-class-balance", action="store_true")
    s.set_defaults(func=_cmd_weights)

    s = sub.add_parser("train", help="train or fine-tune on annotated slices")
    s.add_argument("--images", required=True)
    s.add_argument("--labels", required=True)
    s.add_argument("--slices")
    s.add_argument("--model", help="start model (default: a new network)")
    s.add_argument("--steps", type=int, default=100)
    s.add_argument("--lr", type=float, default=1e-3)
    s.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"])
    s.add_argument("--schedule", default="cosine", choices=["cosine", "constant"])
    s.add_argument("--tile", type=int, default=256)
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
    s.add_argument("--checkpoint", help="save a resumable checkpoint here")
    s.add_argument("--resume", help="resume from this checkpoint")
    s.add_argument("-o", "--output", required=True)
    s.set_defaults(func=_cmd_train)

    s = sub.add_parser("models", help="list the built-in models")
    s.set_defaults(func=_cmd_models)

    s = sub.add_parser("evaluate", help="score a prediction against ground truth (JSON)")
    s.add_argument("--truth", required=True)
    s.add_argument("--pred", required=True)
    s.add_argument("--kind", default="nuclei", choices=["nuclei", "em"])
    s.set_defaults(func=_cmd_evaluate)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``napari-unet`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError, MemoryError) as err:
        print(f"napari-unet {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
