"""Scoring a classifier on held-out data (accuracy, macro-F1, per class, confusion), and its
gradient flow."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import UserError
from . import QUIET, EvaluateRequest, Output, finish_diagnosis

if TYPE_CHECKING:
    from ..classifier import Classifier
    from ..metrics.classification import ClassificationScores


def evaluate(request: EvaluateRequest, out: Output = QUIET) -> dict[str, Any]:
    """Classify a labelled test set: accuracy, macro-F1, per-class P/R/F1, confusion matrix."""
    from ..classifier import Classifier
    from ..files import atomic_write_text
    from ..metrics.classification import classification_scores

    classifier = Classifier.from_pretrained(request.run_dir, device=request.device,
                                            weights=request.checkpoint)
    texts, sources, gold_names, gold, files = _labelled_data(request, classifier)
    started = time.perf_counter()
    probabilities = classifier.probabilities(sources, request.batch_size or 64)
    seconds = time.perf_counter() - started
    predicted = probabilities.argmax(1)
    names = classifier.labels.names
    scores = classification_scores(gold, predicted, len(names))

    out.result(f"accuracy {scores.accuracy:.2f}")
    out.result(f"macro_f1 {scores.macro_f1:.2f}")
    if out.tables:  # a person reads it: tables
        out.table(_tables(names, scores))
    else:  # a file or a pipe: one plain line per fact
        for c, name in enumerate(names):
            out.result(f"class {name}: precision {scores.precision[c]:.2f} recall "
                       f"{scores.recall[c]:.2f} f1 {scores.f1[c]:.2f} support {scores.support[c]}")
        out.result("confusion (rows gold, columns predicted: " + ", ".join(names) + ")")
        for c, name in enumerate(names):
            out.result(f"  {name}\t" + "\t".join(str(n) for n in scores.confusion[c]))
    out.note(f"{len(sources)} texts in {seconds:.1f} s ({len(sources) / max(seconds, 1e-9):.0f}"
                  f" texts/s); {texts.skipped} bad rows skipped, {classifier.truncated} truncated")

    metrics = {
        "task": "classification",
        "data": texts.where,
        "texts": len(sources),
        "accuracy": round(scores.accuracy, 4),
        "macro_f1": round(scores.macro_f1, 4),
        "labels": list(names),
        "per_class": {name: {"precision": round(float(scores.precision[c]), 4),
                             "recall": round(float(scores.recall[c]), 4),
                             "f1": round(float(scores.f1[c]), 4),
                             "support": int(scores.support[c])}
                      for c, name in enumerate(names)},
        "confusion_matrix": scores.confusion.tolist(),  # row = gold, column = predicted
        "skipped": texts.skipped,
        "truncated": classifier.truncated,
        "seconds": round(seconds, 3),
    }
    directory = request.out_dir()
    rows = "".join(f"{gold_names[i]}\t{names[p]}\t{probabilities[i, p]:.4f}\n"
                   for i, p in enumerate(predicted))
    atomic_write_text(directory / "predictions.tsv", "gold\tpredicted\tprobability\n" + rows)
    if request.report is not None:
        from ..reporting.classification import write_classification_report

        metrics = write_classification_report(request.report, classifier, texts.where, files,
                                              sources, np.asarray(gold), probabilities, metrics,
                                              seconds)
        out.note(f"wrote {request.report / 'report.html'} and {request.report / 'report.md'}")
    atomic_write_text(directory / "metrics.json", json.dumps(metrics, indent=1, ensure_ascii=False) + "\n")
    out.note(f"wrote {directory / 'metrics.json'}")
    return metrics


def _labelled_data(request: EvaluateRequest, classifier: Classifier
                   ) -> tuple[Any, list[str], list[str], Any, list[Path]]:
    """(texts, their strings, gold label names, gold label ids, files read) of --data or a split."""
    from ..data.classification import check_labels, load_labeled, load_split

    config = classifier.config
    if request.data is not None:
        texts = load_labeled(config.data, str(request.data))
        files = [request.data]
    else:
        texts = load_split(config.data, request.split, config.training.seed)
        path = getattr(config.data, request.split) or config.data.train  # dev held out of train
        files = [Path(path)]
    check_labels(texts, classifier.labels, f"{request.run_dir}/labels.json")
    if len(texts) == 0:
        raise UserError(f"{texts.where}: no labelled texts to evaluate")
    sources, gold_names = list(texts.texts["text"]), list(texts.texts["label"])
    index = classifier.labels.index()
    return texts, sources, gold_names, [index[name] for name in gold_names], files


def _tables(names: Sequence[str], scores: ClassificationScores) -> Any:
    """Per-class scores and the confusion matrix as rich tables (for the terminal)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text  # label names are data, not markup

    per_class = Table(title="per class (%)")
    for column in ("label", "precision", "recall", "f1", "support"):
        per_class.add_column(column, justify="left" if column == "label" else "right")
    for c, name in enumerate(names):
        per_class.add_row(Text(name), f"{scores.precision[c]:.2f}", f"{scores.recall[c]:.2f}",
                          f"{scores.f1[c]:.2f}", str(scores.support[c]))
    confusion = Table(title="confusion matrix (rows gold, columns predicted)")
    confusion.add_column("gold \\ predicted")
    for name in names:
        confusion.add_column(Text(name), justify="right")
    for c, name in enumerate(names):
        confusion.add_row(Text(name), *(str(n) for n in scores.confusion[c]))
    return Group(per_class, confusion)


def diagnose(request: EvaluateRequest, out: Output = QUIET) -> dict[str, Any]:
    """Gradient flow through time of a classifier, beside fresh models of each cell type."""
    from ..classifier import Classifier
    from ..reporting.classification import FLOW_POSITION, FLOW_WHERE, classification_gradient_flow

    classifier = Classifier.from_pretrained(request.run_dir, device=request.device,
                                            weights=request.checkpoint)
    texts, sources, _, gold, _ = _labelled_data(request, classifier)
    flows = classification_gradient_flow(classifier, sources, np.asarray(gold))
    return finish_diagnosis(request, out, flows, FLOW_POSITION, FLOW_WHERE,
                            classifier.config.training.clip_grad_norm, texts.where)
