"""Output paths that never destroy a user's data.

Every file the package writes (labels, probabilities, weight maps, model files, zarr
stores) goes through :func:`check_output` and :func:`atomic_output`:

* An output equal to one of the inputs (same resolved path or the same file through a
  hard link), or lying inside an input zarr store (or holding one), is refused.
* Device nodes, FIFOs and sockets are refused; so is a directory, unless the output is a
  ``.zarr`` store and the directory already is one (a zarr metadata file at its top).
* A symbolic link is followed: the data is written to the link's target, which is
  replaced, and the link itself is kept. A link that points nowhere is refused.
* An existing output is refused unless ``overwrite=True`` (``--overwrite`` on the
  command line).
* The folder that will hold the output is probed for writability before any work.
* Data is written to a temporary sibling, ``.NAME.napari-unet-PID-TOKEN.tmp`` (a file or
  a directory), that is renamed into place when complete, so an interrupted write leaves
  the previous output intact. A directory is swapped in with one atomic exchange where
  the kernel offers it (Linux ``renameat2``). Temporary siblings left by a killed process
  are removed by the next write to the same output.
* A new output gets the usual mode (``0o666`` less the umask); a replaced one keeps its
  mode.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import secrets
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

TEMP_TAG = ".napari-unet-"
_ZARR_MARKERS = ("zarr.json", ".zarray", ".zgroup")


class OutputError(ValueError):
    """An output path that cannot be written without destroying data (a one-line message)."""


def is_zarr_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a zarr store (by its ``.zarr`` extension)."""
    return str(path).rstrip("/").endswith(".zarr")


def is_zarr_store(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a directory holding zarr metadata at its top."""
    p = Path(path)
    return p.is_dir() and any((p / m).is_file() for m in _ZARR_MARKERS)


def _resolve(path: str | os.PathLike) -> Path:
    return Path(os.path.abspath(Path(path).expanduser())).resolve()


def _same(a: Path, b: Path) -> bool:
    if a == b:
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _conflicts(out: Path, inp: Path) -> bool:
    """Whether writing ``out`` would touch ``inp`` (same file, or one store inside the other)."""
    return (_same(out, inp) or (is_zarr_store(inp) and out.is_relative_to(inp))
            or (is_zarr_path(out) and inp.is_relative_to(out)))


def _kind(mode: int) -> str:
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _probe(folder: Path) -> None:
    """Fail now, not after hours of work, when ``folder`` (or its nearest parent) is read-only."""
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{folder} lies under {existing}, which is a file, not a folder")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".probe{TEMP_TAG}", dir=existing)
    except OSError as err:
        raise OutputError(f"cannot write in {existing}: {err.strerror or err}") from None
    os.close(fd)
    os.unlink(tmp)


def check_output(
    path: str | os.PathLike, *, inputs: Iterable[str | os.PathLike | None] = (),
    overwrite: bool = False, probe: bool = True,
) -> Path:
    """Refuse an output path that would destroy data; return the path to write.

    Parameters
    ----------
    path : str or path-like
        The output (a file, or a ``.zarr`` directory store).
    inputs : iterable of path-like or None
        Files the same command reads; ``None`` entries are skipped.
    overwrite : bool
        Allow replacing an existing output of the right kind.
    probe : bool
        Create and remove an empty file next to the output to check that it is writable.

    Returns
    -------
    pathlib.Path
        The resolved output: the target of a symbolic link.

    Raises
    ------
    OutputError
        With a one-line reason (see the module docstring for the rules).
    """
    given = Path(path).expanduser()
    if str(path) == "":
        raise OutputError("empty output path")
    if given.is_symlink() and not given.exists():
        raise OutputError(f"{given} is a symbolic link to a missing file; refusing to write")
    out = _resolve(given)
    for inp in inputs:
        if inp is not None and str(inp) and _conflicts(out, _resolve(inp)):
            raise OutputError(f"output {given} would overwrite the input {inp}; "
                              "choose another output path")
    zarr = is_zarr_path(given)
    try:
        st = os.stat(out)
    except FileNotFoundError:
        st = None
    except NotADirectoryError:
        raise OutputError(f"{given} lies under a file, not a folder") from None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            if not zarr:
                raise OutputError(f"{given} is an existing directory")
            if not is_zarr_store(out):
                raise OutputError(f"{given} is an existing directory that is not a zarr store; "
                                  "refusing to replace it")
        elif not stat.S_ISREG(st.st_mode):
            raise OutputError(f"{given} is {_kind(st.st_mode)}; refusing to write to it")
        elif zarr:
            raise OutputError(f"{given} is an existing file, not a zarr store")
        if not overwrite:
            raise OutputError(f"{given} exists (use --overwrite to replace it)")
    if probe:
        _probe(out.parent)
    return out


def check_outputs(
    paths: Iterable[str | os.PathLike | None], *,
    inputs: Iterable[str | os.PathLike | None] = (), overwrite: bool = False,
) -> list[Path]:
    """:func:`check_output` for several outputs of one command, which must differ too.

    ``None`` entries (options not given) are skipped.
    """
    given = [p for p in paths if p is not None]
    inputs = [p for p in inputs if p is not None]
    done: list[Path] = []
    for p in given:
        out = check_output(p, inputs=inputs, overwrite=overwrite)
        for q, prev in zip(given, done):
            if _conflicts(out, prev):
                raise OutputError(f"two outputs are the same file: {q} and {p}")
        done.append(out)
    return done


def _umask() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def clean_stale(path: str | os.PathLike) -> list[Path]:
    """Remove temporary siblings of ``path`` left by a killed process; return them.

    A ``.old`` sibling (the previous zarr store, moved aside during a non-atomic swap)
    is moved back when ``path`` itself is missing.
    """
    p = Path(path)
    prefix = f".{p.name}{TEMP_TAG}"
    removed: list[Path] = []
    try:
        entries = list(p.parent.iterdir()) if p.parent.is_dir() else []
    except OSError:
        return removed
    for e in entries:
        name = e.name
        if not name.startswith(prefix) or not name.endswith((".tmp", ".old")):
            continue
        try:
            pid = int(name[len(prefix):].split("-", 1)[0])
        except ValueError:
            continue
        if pid == os.getpid() or _pid_alive(pid):
            continue
        if name.endswith(".old") and not os.path.lexists(p):
            os.rename(e, p)
            continue
        if e.is_dir() and not e.is_symlink():
            shutil.rmtree(e, ignore_errors=True)
        else:
            e.unlink(missing_ok=True)
        removed.append(e)
    return removed


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux ``renameat2(RENAME_EXCHANGE)``); False if unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _temp_name(target: Path, suffix: str) -> Path:
    return target.with_name(f".{target.name}{TEMP_TAG}{os.getpid()}-{secrets.token_hex(4)}{suffix}")


def _install_dir(tmp: Path, target: Path) -> None:
    if not os.path.lexists(target):
        os.rename(tmp, target)
        return
    if _exchange(tmp, target):
        shutil.rmtree(tmp, ignore_errors=True)  # now holds the previous store
        return
    old = _temp_name(target, ".old")
    os.rename(target, old)  # a kill here is undone by clean_stale on the next write
    os.rename(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, *, directory: bool | None = None) -> Iterator[Path]:
    """Write to a temporary sibling of ``path``, renamed into place when the block succeeds.

    Parameters
    ----------
    path : str or path-like
        The output; a symbolic link is followed (its target is replaced). Call
        :func:`check_output` first for the refusal rules.
    directory : bool, optional
        Whether the output is a directory (a zarr store); default: by the ``.zarr``
        extension. The temporary directory exists (empty) when the block starts; a
        temporary file does not exist yet.

    Yields
    ------
    pathlib.Path
        The temporary path to write to.
    """
    target = _resolve(path)
    directory = is_zarr_path(path) if directory is None else directory
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(target)
    tmp = _temp_name(target, ".tmp")
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        mode = (0o777 if directory else 0o666) & ~_umask()
    if directory:
        tmp.mkdir(mode=0o700)
    try:
        yield tmp
        os.chmod(tmp, mode)
        if directory:
            _install_dir(tmp, target)
        else:
            os.replace(tmp, target)
    except BaseException:
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a written file to disk before it is renamed into place."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
