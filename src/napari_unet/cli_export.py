"""The ``napari-unet export`` subcommand: a model as a bioimage.io package (spec 0.5)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any


def cmd_export(a: argparse.Namespace) -> int:
    """Write the bioimage.io package of ``a.model`` to ``a.output`` (0 on success)."""
    from .bioimageio.export import export_bioimageio, require_bioimageio
    from .outputs import check_output

    require_bioimageio()  # before reading anything: say what to install
    model_file = a.model if Path(a.model).is_file() else None
    check_output(a.output, inputs=[model_file, a.sample], overwrite=a.overwrite)
    from .model_files import load_model

    model = load_model(a.model)
    sample = None
    if a.sample:
        from .image_files import read_array

        sample = read_array(a.sample)
    out = export_bioimageio(model, a.output, name=a.name, description=a.description,
                            authors=a.author, license=a.license, tags=a.tag, sample=sample,
                            overwrite=a.overwrite)
    print(f"wrote {out} (check it with: bioimageio test {out})")
    return 0


def add_export_parser(sub: Any, output_flags: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add the ``export`` subcommand to the CLI's subparsers."""
    s = sub.add_parser("export", help="write a model as a bioimage.io package (.zip, spec 0.5)")
    s.add_argument("model", help="built-in name, model file (.pt) or napari-unet package (.zip)")
    s.add_argument("-o", "--output", required=True, help="package to write (NAME.zip)")
    s.add_argument("--name", help="package name (default: the model's)")
    s.add_argument("--description", help="one-paragraph description (default: the model's)")
    s.add_argument("--author", action="append", default=None,
                   help="author name; repeat for several (default: 'napari-unet user')")
    s.add_argument("--license", default="BSD-3-Clause", help="SPDX licence id of the weights")
    s.add_argument("--tag", action="append", default=None, help="extra tag; repeat for several")
    s.add_argument("--sample", help="image (TIFF) for the test tensors (default: a shipped "
                   "nuclei image), 2D or channels first")
    output_flags(s)
    s.set_defaults(func=cmd_export)
