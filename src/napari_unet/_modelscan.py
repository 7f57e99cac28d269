"""Checks of a model file *before* :func:`torch.load` reads its tensors.

A torch file is a zip archive: a pickle (``*/data.pkl``) describing the objects, with
tensors stored as separate records. :func:`scan` reads only the pickle, with an unpickler
that calls nothing (every global becomes an inert placeholder), to get the config and the
declared size of every tensor storage. A file whose tensors would take more memory than
its config implies (a hostile or corrupt file: a few MB can declare gigabytes) is then
refused before anything large is allocated.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

#: Bytes per element of the storage types torch writes (unknown ones count 8).
_ITEMSIZE = {"HalfStorage": 2, "BFloat16Storage": 2, "FloatStorage": 4, "DoubleStorage": 8,
             "LongStorage": 8, "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1,
             "ByteStorage": 1, "BoolStorage": 1, "UntypedStorage": 1}
#: Largest pickle (config, record, optimiser bookkeeping) accepted.
MAX_PICKLE_BYTES = 64 * 2**20
#: A file may hold this many times the float32 size of its network (checkpoints add the
#: optimiser's moments), plus :data:`SLACK_BYTES`.
WEIGHT_COPIES = 8
SLACK_BYTES = 16 * 2**20


class _Stub:
    """An inert stand-in for any global the pickle names; calling it gives another."""

    def __init__(self, name: str = "") -> None:
        self.name = name

    def __call__(self, *args: Any, **kwargs: Any) -> _Stub:
        return _Stub(self.name)

    def __setstate__(self, state: Any) -> None:
        pass


class _MetaUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data))
        self.storages: dict[str, int] = {}  # record key -> declared bytes

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return dict
        return _Stub(name)

    def persistent_load(self, pid: Any) -> Any:
        if isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage":
            kind = pid[1].name if isinstance(pid[1], _Stub) else ""
            try:
                nbytes = int(pid[4]) * _ITEMSIZE.get(kind, 8)
            except (TypeError, ValueError):
                raise ValueError("malformed tensor storage entry") from None
            key = str(pid[2])
            self.storages[key] = max(self.storages.get(key, 0), nbytes)
        return _Stub("storage")


def scan(path: Path) -> tuple[dict[str, Any], dict[str, int], dict[str, int]]:
    """Read a torch zip file's pickle without loading tensors.

    Returns
    -------
    obj : dict
        The top-level object, with placeholders for tensors.
    declared : dict
        Declared bytes of each tensor storage, by record key.
    records : dict
        Uncompressed size of each data record in the archive, by record key.

    Raises
    ------
    ValueError
        If the file is not a torch zip archive or its pickle cannot be read.
    """
    if not zipfile.is_zipfile(path):
        raise ValueError("not a napari-unet model file (not a torch zip archive)")
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        pkl = [i for i in infos if i.filename.endswith("data.pkl")]
        if len(pkl) != 1:
            raise ValueError("not a napari-unet model file (no single data.pkl)")
        if pkl[0].file_size > MAX_PICKLE_BYTES:
            raise ValueError(f"model description too large ({pkl[0].file_size} bytes)")
        prefix = pkl[0].filename[: -len("data.pkl")] + "data/"
        records = {i.filename[len(prefix):]: i.file_size for i in infos
                   if i.filename.startswith(prefix)}
        data = zf.read(pkl[0])
    up = _MetaUnpickler(data)
    try:
        obj = up.load()
    except Exception as err:
        raise ValueError(f"unreadable model description ({type(err).__name__}: {err})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"a model file holds a dict, this one a {type(obj).__name__}")
    return obj, up.storages, records


def check_sizes(declared: dict[str, int], records: dict[str, int], n_parameters: int) -> None:
    """Refuse tensor data larger than a network of ``n_parameters`` can need."""
    limit = WEIGHT_COPIES * 4 * n_parameters + SLACK_BYTES
    for what, sizes in (("declares", declared), ("holds", records)):
        total = sum(sizes.values())
        if total > limit:
            raise ValueError(f"the file {what} {total / 2**20:.1f} MiB of tensors, more than "
                             f"its config allows ({limit / 2**20:.1f} MiB for "
                             f"{n_parameters:,} parameters); refusing to load it")
