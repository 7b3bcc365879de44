"""deepfake-detector: video-level deepfake detection as a reproducible DVC pipeline."""

__version__ = "0.2.0"
