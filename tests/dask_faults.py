"""A handler that ends its Dask worker process on one video, for tests/test_scale_out.py.

Its own small module: the workers get it by value (cloudpickle), without importing the test
module (which imports PyTorch).
"""

from __future__ import annotations

import dataclasses
import os

from deepfake_detector.pipeline.batch import VideoResult
from deepfake_detector.pipeline.extract_frames import _Extractor


@dataclasses.dataclass(frozen=True)
class ExitsOn(_Extractor):
    """Ends its worker process, as a decoder crash would, on one video."""

    victim: str = ""

    def __call__(self, video: dict) -> VideoResult:
        if video["video_id"] == self.victim:
            os._exit(13)
        return _Extractor.__call__(self, video)
