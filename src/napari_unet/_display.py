"""A virtual X display for the demo and screenshot scripts on machines without a screen.

``with virtual_display():`` starts ``Xvfb`` on a free display number (``-displayfd``
lets the server pick it and report when it is ready), sets ``$DISPLAY`` and stops the
server at the end. When ``$DISPLAY`` is already set it does nothing.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import subprocess
import time
from collections.abc import Iterator


def start_xvfb(size: str = "1600x1000x24", timeout: float = 15.0) -> tuple[subprocess.Popen, str]:
    """Start ``Xvfb`` and return the process and its display name (``":N"``).

    Parameters
    ----------
    size : str
        Screen geometry and depth, ``WIDTHxHEIGHTxDEPTH``.
    timeout : float
        Seconds to wait for the server to come up.

    Returns
    -------
    tuple
        ``(process, display)``.

    Raises
    ------
    RuntimeError
        If ``Xvfb`` is not installed or does not start.
    """
    exe = shutil.which("Xvfb")
    if exe is None:
        raise RuntimeError("Xvfb is not installed (apt-get install xvfb), and $DISPLAY is unset")
    read_fd, write_fd = os.pipe()
    cmd = [exe, "-displayfd", str(write_fd), "-screen", "0", size, "-nolisten", "tcp",
           "+extension", "GLX", "+render", "-noreset"]
    proc = subprocess.Popen(cmd, pass_fds=(write_fd,), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    os.close(write_fd)
    deadline = time.monotonic() + timeout
    digits = b""
    try:
        while time.monotonic() < deadline and not digits.endswith(b"\n"):
            ready, _, _ = select.select([read_fd], [], [], 0.2)
            if ready:
                chunk = os.read(read_fd, 64)
                if not chunk:
                    break
                digits += chunk
            elif proc.poll() is not None:
                break
    finally:
        os.close(read_fd)
    if not digits.strip().isdigit():
        stop_xvfb(proc)
        raise RuntimeError("Xvfb did not start")
    return proc, f":{int(digits)}"


def stop_xvfb(proc: subprocess.Popen) -> None:
    """Terminate an ``Xvfb`` process started by :func:`start_xvfb`."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def virtual_display(size: str = "1600x1000x24", force: bool = False) -> Iterator[str | None]:
    """Provide an X display: the current one, or a private ``Xvfb`` when there is none.

    Parameters
    ----------
    size : str
        Geometry of the virtual screen.
    force : bool
        Start Xvfb even when ``$DISPLAY`` is set.

    Yields
    ------
    str or None
        The display started here, or None when an existing one is used.
    """
    if os.environ.get("DISPLAY") and not force:
        yield None
        return
    proc, display = start_xvfb(size)
    old = os.environ.get("DISPLAY")
    os.environ["DISPLAY"] = display
    os.environ.setdefault("QT_QPA_PLATFORM", "xcb")
    try:
        yield display
    finally:
        stop_xvfb(proc)
        if old is None:
            os.environ.pop("DISPLAY", None)
        else:
            os.environ["DISPLAY"] = old
