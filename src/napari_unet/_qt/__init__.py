"""napari dock widgets (Qt). The core (``napari_unet.*``) never imports from here."""

from .finetune import FineTuneWidget
from .segment import SegmentWidget
from .session import Session, get_session
from .weights import BorderWeightsWidget

__all__ = ["BorderWeightsWidget", "FineTuneWidget", "SegmentWidget", "Session", "get_session"]
