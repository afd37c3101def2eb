"""The classification report: scores, per-class table, confusion matrix, calibration, the most
confidently wrong texts, and gradient flow through time."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from . import plots
from .document import Document

if TYPE_CHECKING:
    from pathlib import Path

    from ..classifier import Classifier
    from ..config import Config
    from ..models.classification import ClassificationModel
    from .gradient_flow import GradientFlow, Probe

CALIBRATION_BINS = 10
WRONG_ROWS = 10
PROBE_TEXTS = 32


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray,
                               bins: int = CALIBRATION_BINS) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by bin size."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        chosen = which == b
        if chosen.any():
            total += chosen.sum() * abs(correct[chosen].mean() - confidence[chosen].mean())
    return float(total / max(len(confidence), 1))


def classification_sections(doc: Document, metrics: dict[str, Any], texts: list[str],
                            gold: np.ndarray, probabilities: np.ndarray,
                            names: list[str]) -> dict[str, Any]:
    """Add the classification sections to ``doc``; return the extra metrics they computed."""
    predicted = probabilities.argmax(1)
    confidence = probabilities.max(1)
    correct = predicted == gold

    doc.heading("Scores")
    doc.table(["metric", "score (%)"], [["accuracy", metrics["accuracy"]],
                                       ["macro-F1", metrics["macro_f1"]]])
    doc.table(["label", "precision (%)", "recall (%)", "F1 (%)", "support"],
              [[name, c["precision"], c["recall"], c["f1"], c["support"]]
               for name, c in metrics["per_class"].items()])

    doc.heading("Confusion matrix")
    doc.figure("confusion_matrix", plots.heatmap(
        np.asarray(metrics["confusion_matrix"]), names, names, "Confusion matrix",
        "predicted label", "gold label", "texts", annotate=True),
        "Texts per (gold, predicted) pair: the diagonal is right, the rest are the mistakes.")

    doc.heading("Calibration")
    ece = expected_calibration_error(confidence, correct.astype(float))
    doc.figure("calibration", plots.reliability(confidence, correct, CALIBRATION_BINS),
               "Accuracy against the model's confidence, in 10 equal-width bins (numbers: texts "
               "per bin). Points below the diagonal mean the model is over-confident.")
    doc.text(f"Expected calibration error: {100 * ece:.2f} points (mean |accuracy - confidence| "
             f"over {CALIBRATION_BINS} bins, weighted by their size); mean confidence "
             f"{100 * confidence.mean():.1f}% against accuracy {100 * correct.mean():.1f}%.")

    doc.heading("Most confidently wrong")
    wrong = np.flatnonzero(~correct)
    wrong = wrong[np.argsort(-confidence[wrong], kind="stable")][:WRONG_ROWS]
    if len(wrong) == 0:
        doc.text("Every text was classified correctly.", note=True)
    else:
        doc.table(["line", "text", "gold", "predicted", "probability"],
                  [[int(i) + 1, _short(texts[i]), names[gold[i]], names[predicted[i]],
                    f"{confidence[i]:.3f}"] for i in wrong])
    return {"expected_calibration_error": round(100 * ece, 4),
            "mean_confidence": round(100 * float(confidence.mean()), 4)}


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def classification_probe(classifier: Classifier, model: ClassificationModel, texts: list[str],
                         gold: np.ndarray, device: torch.device) -> Probe:
    """A gradient-flow probe on the longest texts: the loss is the classification loss, x_t the
    embedded tokens."""
    from ..data.batching import IdColumn
    from ..data.classification import encode_texts, make_classification_batch
    from ..models.classification import classification_loss
    from .gradient_flow import Probe

    data = classifier.config.data
    ids, _ = encode_texts(classifier.tokenizer, list(texts), data.max_length, data.truncation)
    longest = np.argsort([-len(row) for row in ids], kind="stable")[:PROBE_TEXTS]
    batch = make_classification_batch(IdColumn.from_lists([ids[i] for i in longest]),
                                      np.asarray(gold)[longest], np.arange(len(longest))).to(device)

    labels = batch.labels
    assert labels is not None  # made from gold labels

    def loss(net: torch.nn.Module) -> torch.Tensor:
        return classification_loss(net(batch.ids, batch.lengths), labels)[0] / len(longest)

    mask = (torch.arange(batch.ids.size(1))[None, :] < batch.lengths[:, None]).to(device)
    return Probe(model, model.embedding, loss, mask)


def classification_gradient_flow(classifier: Classifier, texts: list[str], gold: np.ndarray
                                 ) -> list[GradientFlow]:
    from ..models.classification import ClassificationModel
    from .gradient_flow import compare_cells

    config, device = classifier.config, classifier.device

    def probe_for(model_config: Config) -> Probe:
        model = ClassificationModel(model_config.model, classifier.tokenizer.vocab_size,
                                    len(classifier.labels)).to(device)
        return classification_probe(classifier, model, texts, gold, device)

    trained = classification_probe(classifier, classifier.model, texts, gold, device)
    return compare_cells(config, trained, probe_for)


FLOW_POSITION = "text token"
FLOW_WHERE = f"the {PROBE_TEXTS} longest texts (loss: the classification loss of each text)"


def write_classification_report(directory: Path, classifier: Classifier, described: str, files: list[Any],
                                texts: list[str], gold: np.ndarray, probabilities: np.ndarray,
                                metrics: dict[str, Any], seconds: float) -> dict[str, Any]:
    """Write report.md / report.html / metrics.json for one evaluated data set."""
    from .common import (
        data_section,
        describe_files,
        describe_hardware,
        describe_model,
        environment_section,
        model_section,
        training_seconds,
        training_section,
    )
    from .gradient_flow import flow_section

    run, config = classifier.run, classifier.config
    assert run is not None  # a report is of a run directory
    names = list(classifier.labels.names)
    model_info = describe_model(config, classifier.model, {"text": classifier.tokenizer})
    file_info = describe_files(files)
    hardware = describe_hardware(classifier.device)
    doc = Document(f"Classification report: {run.path}")
    doc.text(f"{metrics['texts']:,} texts of {described}: accuracy {metrics['accuracy']:.2f}%, "
             f"macro-F1 {metrics['macro_f1']:.2f}% over {len(names)} labels.")
    extra = classification_sections(doc, metrics, texts, gold, probabilities, names)
    model_section(doc, model_info)
    data_section(doc, described, f"{metrics['texts']:,} texts", file_info)
    environment_section(doc, hardware, seconds, training_seconds(run))
    training_section(doc, run, config.training.early_stopping_metric)
    flows = classification_gradient_flow(classifier, texts, gold)
    flow_section(doc, flows, FLOW_POSITION, FLOW_WHERE, config.training.clip_grad_norm)
    written = {**metrics, **extra, "model": model_info, "data_files": file_info,
               "hardware": hardware, "gradient_flow": [f.as_dict() for f in flows]}
    doc.write(directory, written)
    return written
