import numpy as np
import pytest
import torch

from napari_unet.model import UNet


def _make_tiny_net() -> UNet:
    torch.manual_seed(0)
    return UNet(base_channels=4, depth=3, normalization={"mode": "none"}).eval()


@pytest.fixture
def tiny_net() -> UNet:
    return _make_tiny_net()


@pytest.fixture
def make_tiny_net():
    """A factory of identical fresh tiny networks (for tests that need several)."""
    return _make_tiny_net


@pytest.fixture
def blobs() -> tuple[np.ndarray, np.ndarray]:
    """A small synthetic image with touching and separate round objects, and its labels."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:96, :96]
    labels = np.zeros((96, 96), np.uint16)
    centres = [(20, 20), (20, 33), (60, 60), (75, 25), (40, 75)]
    for i, (cy, cx) in enumerate(centres, 1):
        labels[((yy - cy) ** 2 + (xx - cx) ** 2 < 64) & (labels == 0)] = i
    image = (labels > 0) * 150.0 + rng.normal(30, 10, labels.shape)
    return np.clip(image, 0, 255).astype(np.uint8), labels


@pytest.fixture
def tiny_session(tmp_path, monkeypatch):
    """A fresh GUI session whose current model is a tiny U-Net; autosave under tmp_path."""
    from napari_unet._qt.session import get_session

    monkeypatch.setenv("NAPARI_UNET_AUTOSAVE_DIR", str(tmp_path / "autosave"))
    torch.manual_seed(0)
    session = get_session()
    session.reset()
    session.add_model(UNet(base_channels=4, depth=3), kind="new", name="tiny")
    yield session
    session.reset()


#: Generous worker timeout of the GUI tests (a busy 2-core machine; no test depends on it).
WORKER_TIMEOUT = 180_000


def wait_finished(qtbot, worker, timeout: int = WORKER_TIMEOUT) -> None:
    """Block until a napari worker has finished (the real worker path)."""
    with qtbot.waitSignal(worker.finished, timeout=timeout):
        pass


def force_self_check(monkeypatch, better: bool) -> None:
    """Make every round's self-check say ``better`` (a tiny random model's is a coin toss)."""
    from napari_unet.training import loop, selfcheck

    real = selfcheck.score_blocks

    def fixed(*args, **kwargs):
        res = yield from real(*args, **kwargs)
        res.better = better
        return res

    monkeypatch.setattr(loop, "score_blocks", fixed)
