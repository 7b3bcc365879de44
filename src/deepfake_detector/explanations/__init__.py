"""Grad-CAM explanations of a verdict and their HTML reports."""
