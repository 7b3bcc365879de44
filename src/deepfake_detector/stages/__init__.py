"""Thin DVC stage entry points: ``python -m deepfake_detector.stages.<name>``."""
