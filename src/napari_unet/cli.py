"""Command line: ``napari-unet predict|weights|train|export|models|evaluate``.

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
from .cli_export import add_export_parser
from .cli_train import add_train_parser, bar_interval, parse_channel, parse_slices
from .image_files import read_array, write_array
from .outputs import check_outputs


def _drive(gen: Generator, desc: str) -> Any:
    """Run a prediction generator to completion with a tqdm bar; return its result."""
    from tqdm import tqdm

    from .jobs import run

    bar = tqdm(desc=desc, unit="tile", file=sys.stderr, mininterval=bar_interval())

    def show(ev: Any) -> None:
        bar.total = ev.total
        bar.update(ev.done - bar.n)

    try:
        return run(gen, show)
    finally:
        bar.close()


def _cmd_predict(a: argparse.Namespace) -> int:
    from .inference.largedata import is_large, predict_to_store
    from .inference.postprocess import PostprocessConfig
    from .inference.predict import predict_iter
    from .inference.predict_config import PredictConfig
    from .model_files import load_model

    check_outputs([a.output, a.probabilities], overwrite=a.overwrite,
                  inputs=[a.input, a.model if Path(a.model).is_file() else None])
    model = load_model(a.model)
    image = read_array(a.input)
    channel_axis = a.channel_axis
    if not is_large(image):
        from .inference.inputs import to_model_channels

        image, channel_axis = to_model_channels(image, model.in_channels, channel_axis,
                                                parse_channel(a.channel))
    # the post-processing flags are named as the settings; not given (None): the model's
    flags = {k: getattr(a, k) for k in PostprocessConfig().to_dict()}
    pp = PostprocessConfig.for_model(model).with_changes(**flags)
    cfg = PredictConfig(device=a.device, tile=a.tile, tta=a.tta, precision=a.precision)
    if is_large(image):
        given = {"slices": a.slices, "probabilities": a.probabilities,
                 "channel_axis": a.channel_axis,
                 **{k: v for k, v in flags.items() if k != "threshold"}}
        unsupported = ["--" + k.replace("_", "-") for k, v in given.items() if v]
        if unsupported:
            raise ValueError(f"{', '.join(unsupported)} cannot be used with a larger-than-memory "
                             "(zarr) input, which is predicted chunk by chunk into a mask")
        predict_to_store(model, image, a.output, cfg, threshold=pp.threshold,
                         overwrite=a.overwrite)
        print(f"wrote {a.output} (foreground mask, streamed chunk by chunk)")
        return 0
    res = _drive(predict_iter(model, image, cfg, slices=parse_slices(a.slices),
                              channel_axis=channel_axis), "predict")
    labels = pp.labels(res.probabilities)
    dtype = np.uint16 if labels.max() < 2**16 else np.uint32
    write_array(a.output, labels.astype(dtype), overwrite=a.overwrite)
    if a.probabilities:
        write_array(a.probabilities, res.probabilities, overwrite=a.overwrite)
    print(f"wrote {a.output} ({labels.max()} objects, device {res.device}, {res.precision})")
    return 0


def _cmd_weights(a: argparse.Namespace) -> int:
    from .training.border_weights import border_distances, border_weight_map, separation_borders

    check_outputs([a.output, a.d1, a.d2], inputs=[a.labels], overwrite=a.overwrite)
    labels = read_array(a.labels)
    w = border_weight_map(labels, w0=a.w0, sigma=a.sigma, class_balance=not a.no_class_balance)
    write_array(a.output, w.astype(np.float32), overwrite=a.overwrite)
    if a.d1 or a.d2:
        # distances to the separated objects: the ones the border term of w uses
        d1, d2 = border_distances(separation_borders(labels))
        if a.d1:
            write_array(a.d1, d1, overwrite=a.overwrite)
        if a.d2:
            write_array(a.d2, d2, overwrite=a.overwrite)
    print(f"wrote {a.output}: w in [{float(w.min()):.3g}, {float(w.max()):.3g}]")
    return 0


def _cmd_models(a: argparse.Namespace) -> int:
    from .model_files import list_builtin_models, load_model
    from .model_record import ModelRecord

    names = list_builtin_models()
    if not names:
        print("no built-in models installed")
    for name in names:
        m = load_model(name)
        c = m.config
        print(f"{name}\tdepth={c.depth} base={c.base_channels} padding={c.padding} "
              f"in={c.in_channels} classes={','.join(c.class_names)}\t"
              f"{ModelRecord.of(m).description or ''}")
    return 0


def _cmd_evaluate(a: argparse.Namespace) -> int:
    from .metrics import evaluate_em, evaluate_nuclei

    truth, pred = read_array(a.truth), read_array(a.pred)
    result = evaluate_em(truth, pred) if a.kind == "em" else evaluate_nuclei(truth, pred)
    print(json.dumps(result, indent=2, allow_nan=False))  # NaN is not JSON
    return 0


def _positive_int(text: str) -> int:
    """Type for argparse: an integer >= 1."""
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return v


def _count(text: str) -> int:
    """Type for argparse: an integer >= 0."""
    v = int(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return v


def _probability(text: str) -> float:
    """Type for argparse: a number in [0, 1]."""
    v = float(text)
    if not 0.0 <= v <= 1.0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1], got {text}")
    return v


def _output_flags(s: argparse.ArgumentParser, overwrite: bool = True) -> None:
    """``--overwrite`` (commands that write) and ``--debug`` (every subcommand)."""
    if overwrite:
        s.add_argument("--overwrite", action="store_true",
                       help="replace existing output files (refused by default)")
    s.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show the full traceback of an error")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with all subcommands."""
    p = argparse.ArgumentParser(prog="napari-unet", description="U-Net segmentation: predict, "
                                "border weights, fine-tuning, evaluation.")
    p.add_argument("--version", action="version", version=f"napari-unet {__version__}")
    p.add_argument("--debug", action="store_true",
                   help="show the full traceback of an error (also after the subcommand)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_predict_parser(sub)
    _add_weights_parser(sub)
    add_train_parser(sub, _output_flags)
    add_export_parser(sub, _output_flags)
    _add_models_parser(sub)
    _add_evaluate_parser(sub)
    return p


def _add_predict_parser(sub: Any) -> None:
    """The ``predict`` subcommand: segment an image or stack.

    Parameters
    ----------
    sub : argparse._SubParsersAction
        The subcommands of :func:`build_parser`.
    """
    s = sub.add_parser("predict", help="segment an image or stack (TIFF or zarr)")
    s.add_argument("input")
    s.add_argument("-o", "--output", required=True, help="labels file (.tif or .zarr)")
    _output_flags(s)
    s.add_argument("--model", default="nuclei-fluorescence",
                   help="built-in name, model file or bioimage.io package (.zip)")
    s.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    s.add_argument("--tile", type=_positive_int, default=None,
                   help="input tile size in px (rounded up to a size the network accepts)")
    s.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="average the 8 flips/rotations (default: the model's recommendation)")
    s.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto",
                   help="auto: bf16 on GPUs and on CPUs with AMX or AVX-512 BF16, else fp32")
    s.add_argument("--probabilities", help="also write per-class probabilities here")
    s.add_argument("--slices", help="only these slices of a stack, e.g. 3,4")
    _postprocess_flags(s)
    s.add_argument("--channel-axis", type=int, default=None,
                   help="axis holding colour channels (RGB is found by itself)")
    s.add_argument("--channel", default="auto",
                   help="auto (gray for 1-channel models), gray, or a channel index")
    s.set_defaults(func=_cmd_predict)


def _postprocess_flags(s: argparse.ArgumentParser) -> None:
    """``predict``'s post-processing flags, named as the settings (None: the model's)."""
    s.add_argument("--threshold", type=_probability, default=None,
                   help="foreground threshold (default: the model's tuned value, else 0.5)")
    s.add_argument("--watershed", action=argparse.BooleanOptionalAction, default=None,
                   help="grow objects over predicted borders (default: the model's setting)")
    s.add_argument("--min-size", type=_count, default=None, help="drop smaller objects (px)")
    s.add_argument("--seed-threshold", type=_probability, default=None,
                   help="split objects holding several cores above this probability "
                        "(default: the model's setting)")
    s.add_argument("--fill", action=argparse.BooleanOptionalAction, default=None,
                   help="grow objects over all background, a partition as for EM cells "
                        "(default: the model's setting)")


def _add_weights_parser(sub: Any) -> None:
    """The ``weights`` subcommand: the border weight map (Eq. 2) of a label image."""
    s = sub.add_parser("weights", help="border weight map (Eq. 2) of a label image")
    s.add_argument("labels")
    s.add_argument("-o", "--output", required=True)
    _output_flags(s)
    s.add_argument("--w0", type=float, default=10.0)
    s.add_argument("--sigma", type=float, default=5.0)
    s.add_argument("--d1")
    s.add_argument("--d2")
    s.add_argument("--no-class-balance", action="store_true")
    s.set_defaults(func=_cmd_weights)


def _add_models_parser(sub: Any) -> None:
    """The ``models`` subcommand: list the built-in models."""
    s = sub.add_parser("models", help="list the built-in models")
    _output_flags(s, overwrite=False)
    s.set_defaults(func=_cmd_models)


def _add_evaluate_parser(sub: Any) -> None:
    """The ``evaluate`` subcommand: score a prediction against ground truth."""
    s = sub.add_parser("evaluate", help="score a prediction against ground truth (JSON)")
    s.add_argument("--truth", required=True)
    s.add_argument("--pred", required=True)
    s.add_argument("--kind", default="nuclei", choices=["nuclei", "em"])
    _output_flags(s, overwrite=False)
    s.set_defaults(func=_cmd_evaluate)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``napari-unet`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except Exception as err:
        if args.debug:
            raise
        msg, rc = error_message(err)
        msg = msg.replace("(channel_axis=...)", "(--channel-axis N)")
        print(f"napari-unet {args.command}: error: {msg}", file=sys.stderr)
        return rc
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"napari-unet {args.command}: interrupted", file=sys.stderr)
        return 130


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def error_message(err: Exception) -> tuple[str, int]:
    """One line for an exception, and the exit status: 2 for expected failures, 1 for bugs.

    Expected: bad values and files (``ValueError``, ``TypeError``, ``FileNotFoundError``,
    ``FloatingPointError``), operating-system errors (a read-only or full disk: the
    message names the file) and running out of memory (also torch's allocation
    failures). Anything else is reported as an internal error; ``--debug`` shows its
    traceback.
    """
    text = _first_line(err)
    if isinstance(err, MemoryError) or (isinstance(err, RuntimeError) and (
            "out of memory" in text.lower() or "can't allocate memory" in text.lower())):
        return f"out of memory ({text}); try a smaller --tile", 2
    if isinstance(err, (ValueError, TypeError, FileNotFoundError, FloatingPointError)):
        return text, 2
    if isinstance(err, OSError):
        where = f"{err.filename}: " if err.filename else ""
        return f"{where}{err.strerror or text}", 2
    return (f"internal error {type(err).__name__}: {text} (rerun with --debug for the "
            "traceback, and please report it)"), 1


if __name__ == "__main__":
    sys.exit(main())
