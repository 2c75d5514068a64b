"""Metrics shared by the recipes."""

from __future__ import annotations

import numpy as np

__all__ = ["macro_f1", "roc_auc"]


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann–Whitney U with average ranks for ties); NaN with one class only.

        roc_auc([0, 1, 1], [0.1, 0.1, 0.9])  # 0.75: the tie counts half
    """
    labels = np.asarray(labels).reshape(-1).astype(bool)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    positives, negatives = labels.sum(), (~labels).sum()
    if positives == 0 or negatives == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    rank_sums = np.bincount(inverse, weights=ranks)
    ranks = (rank_sums / counts)[inverse]
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def macro_f1(predicted: np.ndarray, truth: np.ndarray, num_labels: int) -> float:
    """Unweighted mean over labels 0..num_labels-1 of the per-label F1; a label never predicted correctly
    (true positives 0) scores 0.

        macro_f1(np.array([0, 1, 1]), np.array([0, 1, 0]), 2)  # (2/3 + 2/3) / 2
    """
    predicted, truth = np.asarray(predicted), np.asarray(truth)
    f1s = []
    for label in range(num_labels):
        tp = np.sum((predicted == label) & (truth == label))
        fp = np.sum((predicted == label) & (truth != label))
        fn = np.sum((predicted != label) & (truth == label))
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1s))
