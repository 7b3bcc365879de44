"""Pure scoring maths: face scores to one video score (aggregate) and the metrics (ROC AUC, thresholds)."""
