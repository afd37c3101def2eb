"""Classification inference: one path used by validation, the CLI and the Python API.

    from seq2seq import Classifier
    classifier = Classifier.from_pretrained("runs/sst2_bilstm")
    classifier.predict(["a gorgeous , witty , seductive movie ."])
    # [Prediction(label='1', probability=0.97, top=[('1', 0.97)])]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import torch

from .config import Config
from .data.batching import IdColumn
from .data.classification import LabelVocabulary, encode_texts, make_classification_batch
from .errors import UserError, require_text_list
from .export.folder import is_export_dir
from .models.classification import ClassificationModel
from .pretrained import load_tokenizers, open_run, weights_path
from .run_directory import RunDirectory, load_weights
from .runtime import fit_threads, select_device
from .tokenizers import Tokenizer


@torch.no_grad()
def class_probabilities(model: ClassificationModel, ids: IdColumn, device: torch.device,
                        batch_size: int = 64) -> np.ndarray:
    """[N, C] class probabilities of every row of ``ids`` (token ids without </s>), row order.

    Rows are sorted by length before batching so a batch holds similar lengths (little
    padding); the results are put back in input order.
    """
    model.eval()
    order = np.argsort(ids.lengths(), kind="stable")
    out = np.zeros((len(ids), model.num_classes), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        fit_threads()
        rows = order[start: start + batch_size]
        batch = make_classification_batch(ids, None, rows).to(device)
        logits = model(batch.ids, batch.lengths).float()
        out[rows] = torch.softmax(logits, dim=-1).cpu().numpy()
    return out


@dataclass
class Prediction:
    label: str  # the most probable label
    probability: float
    top: list[tuple[str, float]]  # the top_k (label, probability) pairs, most probable first


class Classifier:
    """A trained text classifier loaded from a run directory."""

    def __init__(self, config: Config, model: ClassificationModel, tokenizer: Tokenizer,
                 labels: LabelVocabulary, device: torch.device,
                 run: RunDirectory | None = None) -> None:
        self.config = config
        self.run = run  # where it was loaded from (None for a model built in memory)
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.labels = labels
        self.device = device
        self.truncated = 0  # texts cut to data.max_length tokens by the last call

    @classmethod
    def from_pretrained(cls, run_dir: str | Path, device: str = "auto",
                        weights: str | Path | None = None) -> Classifier:
        """Load config, labels, tokenizer and ``model.safetensors`` (or ``weights``) from
        ``run_dir``; or, from an export folder, its graph to run with ONNX Runtime."""
        if is_export_dir(run_dir):
            from .export.backend import OnnxClassificationModel, open_export

            folder, config = open_export(run_dir, "classification", device, weights)
            tokenizer, _ = load_tokenizers(folder, config)
            # The graph stands in for a ClassificationModel: it offers what inference calls.
            model = cast(ClassificationModel, OnnxClassificationModel(folder))
            return cls(config, model, tokenizer, LabelVocabulary.load(folder.path),
                       torch.device("cpu"))
        run, config = open_run(run_dir, "classification")
        labels = LabelVocabulary.load(run.path)
        tokenizer, _ = load_tokenizers(run, config)
        model = ClassificationModel(config.model, tokenizer.vocab_size, len(labels))
        load_weights(model, weights_path(run, weights))
        return cls(config, model, tokenizer, labels, select_device(device), run)

    def probabilities(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """[N, C] probabilities; column c is label ``self.labels.names[c]``.

        Texts longer than data.max_length tokens are cut as in training (data.truncation);
        an empty text is classified from the empty sequence (just </s>).
        """
        require_text_list(texts, "Classifier.probabilities")
        if batch_size < 1:
            raise UserError(f"batch size must be >= 1, got {batch_size}")
        data = self.config.data
        ids, cut = encode_texts(self.tokenizer, list(texts), data.max_length, data.truncation)
        self.truncated = sum(cut)
        return class_probabilities(self.model, IdColumn.from_lists(ids), self.device, batch_size)

    def predict(self, texts: list[str], top_k: int = 1, batch_size: int = 64) -> list[Prediction]:
        """One Prediction per text, in input order; ``top_k`` labels each (at most all labels)."""
        if top_k < 1:
            raise UserError(f"top_k must be >= 1, got {top_k}")
        probabilities = self.probabilities(texts, batch_size)
        k = min(top_k, len(self.labels))
        best = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
        names = self.labels.names
        results = []
        for row, classes in zip(probabilities, best):
            top = [(names[c], float(row[c])) for c in classes]
            results.append(Prediction(top[0][0], top[0][1], top))
        return results
