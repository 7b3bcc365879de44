"""From face scores to a verdict: the calibration a detector carries, and judging one file."""
