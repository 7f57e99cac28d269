"""GUI responsiveness of the loop in a real napari viewer (under Xvfb when there is no screen).

A ``(Z, Y, X)`` uint16 stack of synthetic nuclei (default 20 x 1024^2) is opened with the
three docks. A 10 ms ``QTimer`` ticks all along; the gap between two ticks is how long the
GUI thread was blocked (10 ms when idle). Phases, each measured on its own:

1. ``segment``: Segment the whole stack (results written into the layers);
2. ``mark``: mark slice 0 corrected (an immediate autosave, with a backup);
3. ``paint``: 40 strokes on two slices, with pauses that let the autosave run;
4. ``finetune``: one round of ``--steps`` steps (loss plot, progress), then the
   re-segment of the current slice.

The model is a tiny untrained U-Net by default (``--model tiny``): what is measured is the
GUI, not the network; ``--model nuclei-fluorescence`` uses the shipped starter. Last line:
``RESULT max_gap_ms=... p99_gap_ms=...`` over all phases (goal: <= 100 and <= 50).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable

import numpy as np

TICK_MS = 10


def synthetic_stack(n: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Bright round nuclei on a dark noisy background, and their labels."""
    rng = np.random.default_rng(seed)
    img = rng.normal(300, 40, (n, size, size)).clip(0).astype(np.uint16)
    lab = np.zeros((n, size, size), np.int32)
    yy, xx = np.mgrid[:size, :size]
    r = max(4, size // 64)
    for z in range(n):
        for i, (cy, cx) in enumerate(rng.integers(r, size - r, (max(4, size // 40), 2)), 1):
            disk = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
            img[z][disk] += 2000
            lab[z][disk & (lab[z] == 0)] = i
    return img, lab


class GapMonitor:
    """Records the time between ticks of a 10 ms ``QTimer`` (the GUI thread's gaps)."""

    def __init__(self) -> None:
        from qtpy.QtCore import QTimer

        self.gaps: list[float] = []
        self._last = time.perf_counter()
        self.timer = QTimer()
        self.timer.setInterval(TICK_MS)
        self.timer.timeout.connect(self._tick)

    def _tick(self) -> None:
        now = time.perf_counter()
        self.gaps.append(1000 * (now - self._last))
        self._last = now

    def start(self) -> None:
        self._last = time.perf_counter()
        self.gaps = []
        self.timer.start()

    def stop(self) -> list[float]:
        self.timer.stop()
        return list(self.gaps)


class StackSampler:
    """While the GUI thread has not ticked for ``after_ms``, sample its Python stack.

    A background thread looks every 5 ms; the stacks seen during long gaps are counted,
    innermost project or napari frames first, and :meth:`report` prints the most common.
    """

    def __init__(self, monitor: GapMonitor, after_ms: float = 40.0) -> None:
        import threading

        self.monitor, self.after_ms = monitor, after_ms
        self.counts: dict[str, int] = {}
        self.gaps: dict[float, dict[str, int]] = {}  # per gap (its start): stack counts
        self.main = threading.main_thread().ident
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        import sys
        import traceback

        while not self._stop.wait(0.005):
            if 1000 * (time.perf_counter() - self.monitor._last) < self.after_ms:  # noqa: SLF001
                continue
            frame = sys._current_frames().get(self.main)  # noqa: SLF001
            if frame is None:
                continue
            stack = traceback.extract_stack(frame)
            keep = [f for f in stack if "napari" in f.filename or "vispy" in f.filename
                    or "matplotlib" in f.filename or "numpy" in f.filename][-6:]
            key = " <- ".join(f"{os.path.basename(f.filename)}:{f.lineno} {f.name}"
                              for f in reversed(keep))
            self.counts[key] = self.counts.get(key, 0) + 1
            gap = self.gaps.setdefault(self.monitor._last, {})  # noqa: SLF001
            gap[key] = gap.get(key, 0) + 1

    def report(self, top: int = 15) -> None:
        self._stop.set()
        total = sum(self.counts.values()) or 1
        print(f"stacks during gaps > {self.after_ms:.0f} ms ({total} samples of 5 ms):")
        for key, n in sorted(self.counts.items(), key=lambda kv: -kv[1])[:top]:
            print(f"  {n:5d}  {key}")
        print("the longest gaps (5 ms samples; most common stacks):")
        for gap in sorted(self.gaps.values(), key=lambda g: -sum(g.values()))[:6]:
            print(f"  ~{5 * sum(gap.values()) + self.after_ms:.0f} ms")
            for key, n in sorted(gap.items(), key=lambda kv: -kv[1])[:3]:
                print(f"    {n:4d}  {key}")


def run_until(done: Callable[[], bool], timeout: float) -> None:
    """Run the Qt event loop until ``done()`` or ``timeout`` seconds."""
    from qtpy.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    deadline = time.monotonic() + timeout
    poll = QTimer()
    poll.setInterval(20)
    poll.timeout.connect(lambda: loop.quit() if done() or time.monotonic() > deadline else None)
    poll.start()
    loop.exec()
    poll.stop()


def wait_for(seconds: float) -> None:
    """Let the event loop run for ``seconds``."""
    end = time.monotonic() + seconds
    run_until(lambda: time.monotonic() >= end, seconds + 1)


def summary(gaps: list[float]) -> tuple[float, float]:
    """``(max, 99th percentile)`` in ms (0 when empty)."""
    if not gaps:
        return 0.0, 0.0
    return float(np.max(gaps)), float(np.percentile(gaps, 99))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slices", type=int, default=20)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=10, help="fine-tuning steps")
    parser.add_argument("--model", default="tiny", help="'tiny' or a built-in model name")
    parser.add_argument("--timeout", type=float, default=900.0, help="per phase, seconds")
    parser.add_argument("--stacks", action="store_true",
                        help="print the GUI thread's stacks seen during gaps over 40 ms")
    args = parser.parse_args()
    os.environ.setdefault("NAPARI_UNET_AUTOSAVE_DIR", tempfile.mkdtemp(prefix="bench_gui_"))

    from napari_unet._display import virtual_display

    with virtual_display(size="1920x1080x24"):
        run(args)


def run(args: argparse.Namespace) -> None:
    import napari
    import torch

    from napari_unet._qt.session import get_session
    from napari_unet.model import UNet

    torch.manual_seed(0)
    session = get_session()
    if args.model == "tiny":
        session.add_model(UNet(base_channels=4, depth=3), kind="new", name="tiny")
    else:
        session.set_current(args.model)
    img, lab = synthetic_stack(args.slices, args.size)
    viewer = napari.Viewer(show=True)
    viewer.add_image(img, name="stack", colormap="gray")
    _, seg = viewer.window.add_plugin_dock_widget("napari-unet", "Segment")
    _, ft = viewer.window.add_plugin_dock_widget("napari-unet", "Fine-tune")
    viewer.window.add_plugin_dock_widget("napari-unet", "Border weights")
    for dock in (seg, ft):
        dock.image_combo.set_layer("stack")
        dock.device_combo.setCurrentText("cpu")
    seg.scope_combo.setCurrentText("whole stack")
    seg.unc_check.setChecked(True)
    ft.steps_spin.setValue(args.steps)
    ft.tile_spin.setValue(128)
    ft.confirm_unmarked = lambda slices: True
    # napari imports pandas and compiles shaders for the first Labels layer of a session:
    # a one-time cost, paid here before the measurements start
    viewer.layers.remove(viewer.add_labels(np.zeros((2, 8, 8), np.int32), name="warm-up"))
    wait_for(1.0)
    monitor = GapMonitor()
    sampler = StackSampler(monitor) if args.stacks else None
    results: dict[str, tuple[float, float]] = {}
    every: list[float] = []

    def phase(name: str, action: Callable[[], Callable[[], bool]]) -> None:
        monitor.start()
        t0 = time.perf_counter()
        done = action()
        run_until(done, args.timeout)
        wait_for(0.3)
        gaps = monitor.stop()
        every.extend(gaps)
        results[name] = summary(gaps)
        print(f"{name:9s} {time.perf_counter() - t0:7.1f} s  max_gap_ms={results[name][0]:.0f} "
              f"p99_gap_ms={results[name][1]:.0f}", flush=True)

    def segment() -> Callable[[], bool]:
        seg.run()
        return lambda: seg.worker is None

    phase("segment", segment)
    labels = viewer.layers["stack labels"]
    saver = ft.correction.autosaver

    def mark() -> Callable[[], bool]:
        viewer.dims.set_current_step(0, 0)
        ft.correction.toggle_mark()
        return lambda: saver.worker is None and saver._queued is None  # noqa: SLF001

    phase("mark", mark)

    def paint() -> Callable[[], bool]:
        from qtpy.QtCore import QTimer

        r = max(3, args.size // 100)
        yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
        disk = yy ** 2 + xx ** 2 <= r * r
        rng = np.random.default_rng(1)
        state = {"n": 0}

        def stroke() -> None:
            z = state["n"] % 2
            cy, cx = rng.integers(r, args.size - r, 2)
            ys, xs = (yy[disk] + cy).ravel(), (xx[disk] + cx).ravel()
            labels.data_setitem((np.full(ys.size, z), ys, xs), 1000 + state["n"])
            state["n"] += 1
            if state["n"] < 40:
                QTimer.singleShot(30 if state["n"] % 10 else 1500, stroke)  # pauses: autosave

        stroke()
        return lambda: state["n"] >= 40 and saver.worker is None and not saver.timer.isActive()

    phase("paint", paint)
    saves = len(os.listdir(os.environ["NAPARI_UNET_AUTOSAVE_DIR"]))

    def finetune() -> Callable[[], bool]:
        ft.start()
        return lambda: ft.worker is None and ft.predict_worker is None

    phase("finetune", finetune)
    top, p99 = summary(every)
    print(f"loss plot redraws: {ft.plot.redraws}; autosave files: {saves}")
    if sampler is not None:
        sampler.report()
    viewer.close()
    print(f"RESULT max_gap_ms={top:.0f} p99_gap_ms={p99:.0f} "
          + " ".join(f"{k}_max_ms={v[0]:.0f}" for k, v in results.items()))


if __name__ == "__main__":
    main()
