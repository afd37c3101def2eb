"""Classification metrics from gold and predicted class indices: accuracy, macro-F1,
per-class precision / recall / F1 and the confusion matrix. Scores are percentages (0-100),
like BLEU and chrF elsewhere in seq2seq.

Macro-F1 averages the F1 of the classes that occur in the gold labels or the predictions
(scikit-learn's default); a class with no prediction has precision 0, one with no gold
example recall 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def confusion_matrix(gold: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """[C, C] counts: row = gold class, column = predicted class."""
    gold, predicted = np.asarray(gold, dtype=np.int64), np.asarray(predicted, dtype=np.int64)
    flat = np.bincount(gold * num_classes + predicted, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


@dataclass
class ClassificationScores:
    accuracy: float  # %
    macro_f1: float  # %
    precision: np.ndarray  # [C] %
    recall: np.ndarray  # [C] %
    f1: np.ndarray  # [C] %
    support: np.ndarray  # [C] gold examples per class
    confusion: np.ndarray  # [C, C] row = gold, column = predicted


def classification_scores(gold: np.ndarray, predicted: np.ndarray,
                          num_classes: int) -> ClassificationScores:
    """Scores of ``predicted`` [N] against ``gold`` [N] class indices."""
    confusion = confusion_matrix(gold, predicted, num_classes)
    correct = np.diag(confusion).astype(np.float64)
    support = confusion.sum(1)
    guessed = confusion.sum(0)
    precision = _ratio(correct, guessed)
    recall = _ratio(correct, support)
    f1 = _ratio(2 * precision * recall, precision + recall)
    present = (support + guessed) > 0
    total = int(support.sum())
    return ClassificationScores(
        accuracy=100.0 * float(correct.sum()) / total if total else 0.0,
        macro_f1=100.0 * float(f1[present].mean()) if present.any() else 0.0,
        precision=100.0 * precision, recall=100.0 * recall, f1=100.0 * f1,
        support=support, confusion=confusion)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0."""
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    out = np.zeros_like(numerator)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out
