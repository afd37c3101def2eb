"""The classification head's side of training: data, labels, tokenizer, model, loss, validation."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from rich.console import Console

from ..classifier import class_probabilities
from ..config import Config
from ..data.batching import BucketBatchSampler
from ..data.classification import (
    ClassificationBatch,
    LabeledCorpus,
    LabelVocabulary,
    check_labels,
    label_names,
    load_train_dev,
    make_classification_batch,
    tokenize_labeled,
)
from ..errors import UserError
from ..files import atomic_write_bytes
from ..metrics.classification import classification_scores
from ..models.classification import ClassificationModel, classification_loss, copy_encoder_weights
from ..pretrained import load_tokenizers, save_tokenizers, weights_path
from ..run_directory import TEXT_TOKENIZER, RunDirectory
from ..tokenizers import Tokenizer, load_tokenizer, train_tokenizer
from ..training.distributed import ProcessInfo
from ..training.trainer import Validation
from ..word_vectors import start_from_vectors, vocabulary_words


class ClassificationTask:
    """Implements the trainer's TrainingTask protocol for a ClassificationModel."""

    unit = "texts"

    def __init__(self, config: Config, train: LabeledCorpus, dev: LabeledCorpus,
                 tokenizer: Tokenizer, labels: LabelVocabulary, device: torch.device,
                 process: ProcessInfo = ProcessInfo()) -> None:
        self.config = config
        self.train = train
        self.dev = dev
        self.tokenizer = tokenizer
        self.labels = labels
        self.device = device
        self.model = ClassificationModel(config.model, tokenizer.vocab_size, len(labels)).to(device)
        t = config.training
        self.class_weights = (torch.from_numpy(balanced_weights(train.labels, len(labels))).to(device)
                              if t.class_weights == "balanced" else None)
        self.sampler = BucketBatchSampler(
            train.ids.lengths() + 1, batch_size=t.batch_size, batch_tokens=t.batch_tokens,
            shuffle=True, seed=t.seed, rank=process.rank, world_size=process.world_size)

    @classmethod
    def setup(cls, config: Config, run: RunDirectory, resume: bool, device: torch.device,
              console: Console, process: ProcessInfo = ProcessInfo()) -> ClassificationTask:
        """Load the data; make (fresh run) or load (resume) the labels and the tokenizer.

        With ``model.init_from`` a fresh run takes the tokenizer of that language-model or
        classification run and copies its embedding and encoder weights; with
        ``model.pretrained_embeddings`` its embedding starts from those word vectors.
        """
        data = config.data
        train_texts, dev_texts = load_train_dev(data, config.training.seed)
        # A resumed run, and every rank but 0 (which set the run up before the others start),
        # read the labels and the tokenizer from the run directory.
        reuse = resume or not process.is_main
        if reuse:
            labels = LabelVocabulary.load(run.path)
            check_labels(train_texts, labels, f"{run.path}/labels.json")
        else:
            labels = label_names(train_texts)
        check_labels(dev_texts, labels, f"the training data {train_texts.where}")
        init_from = config.model.init_from
        if reuse:
            tokenizer, _ = load_tokenizers(run, config)
        elif init_from:
            tokenizer, source_task = pretrained_tokenizer(init_from, run)
        else:
            tokenizer = train_text_tokenizer(train_texts.texts, config)
        if not reuse:
            labels.save(run.path)
            if not init_from:
                save_tokenizers(run, config, tokenizer, tokenizer)
        train = tokenize_labeled(train_texts, tokenizer, labels, data.max_length, data.truncation)
        dev = tokenize_labeled(dev_texts, tokenizer, labels, data.max_length, data.truncation)
        skipped = train.skipped + dev.skipped
        console.print(
            f"data: {len(train):,} training texts ({train.truncated:,} truncated to "
            f"{data.max_length} tokens, {data.truncation}), {len(dev):,} dev texts"
            f"{f' ({dev.truncated:,} truncated)' if dev.truncated else ''}"
            f"{f'; {skipped:,} rows without text or label skipped' if skipped else ''}; "
            f"{len(labels)} labels "
            f"({', '.join(labels.names[:10])}{', ...' if len(labels) > 10 else ''}); "
            f"{tokenizer.kind} vocabulary {tokenizer.vocab_size}", markup=False, highlight=False)
        task = cls(config, train, dev, tokenizer, labels, device, process)
        if init_from and not reuse:  # (the other ranks receive rank 0's weights)
            copied, total = copy_encoder_weights(task.model, weights_path(RunDirectory(init_from)))
            console.print(f"init_from {init_from}: copied {copied} of {total} embedding and "
                          f"encoder tensors from the {source_task.replace('_', ' ')} run")
        if config.model.pretrained_embeddings and not reuse:
            console.print(start_from_vectors(task.model.embedding, tokenizer,
                                             config.model.pretrained_embeddings), markup=False)
        return task

    # ---- the TrainingTask protocol ----

    def train_batches(self, epoch: int) -> list[np.ndarray]:
        return self.sampler.epoch_batches(epoch)

    def make_batch(self, indices: np.ndarray, device: torch.device) -> ClassificationBatch:
        return make_classification_batch(self.train.ids, self.train.labels, indices).to(device)

    def loss(self, batch: ClassificationBatch, step: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        logits = self.model(batch.ids, batch.lengths)
        assert batch.labels is not None  # training batches hold labels
        return classification_loss(logits, batch.labels, self.class_weights,
                                   self.config.training.label_smoothing)

    def validate(self) -> Validation:
        """Accuracy, macro-F1 (both in %) and the mean NLL on the dev set, through the
        classifier's inference path; a few dev texts with their predictions."""
        probabilities = class_probabilities(self.model, self.dev.ids, self.device)
        gold = self.dev.labels
        predicted = probabilities.argmax(1)
        scores = classification_scores(gold, predicted, len(self.labels))
        picked = probabilities[np.arange(len(gold)), gold]
        loss = float(-np.log(np.maximum(picked, 1e-12)).mean()) if len(gold) else 0.0
        metrics = {"accuracy": scores.accuracy, "macro_f1": scores.macro_f1, "loss": loss}
        texts = self.dev.texts.select(range(min(3, len(gold))))["text"]
        names = self.labels.names
        examples = [f"{'ok   ' if predicted[i] == gold[i] else 'wrong'} gold {names[gold[i]]}, "
                    f"predicted {names[predicted[i]]} ({probabilities[i, predicted[i]]:.2f}): "
                    f"{_shorten(text)}" for i, text in enumerate(texts)]
        return Validation(metrics, examples)


def balanced_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """sklearn's "balanced" class weights: n / (classes * count_c); their mean over texts is 1."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, len(labels) / (num_classes * np.maximum(counts, 1)), 0.0)
    return weights.astype(np.float32)


def train_text_tokenizer(texts: Any, config: Config) -> Tokenizer:
    """Train the one tokenizer of a classifier on its training texts."""
    t = config.tokenizer

    def column() -> Iterator[str]:
        for start in range(0, len(texts), 10_000):  # stream from Arrow, never the whole list
            yield from texts[start: start + 10_000]["text"]

    return train_tokenizer(column(), kind=t.kind, vocab_size=t.vocab_size,
                           model_type=t.model_type, min_freq=t.min_freq,
                           max_sentences=t.max_sentences, lowercase=t.lowercase,
                           seed=config.training.seed,
                           extra_words=vocabulary_words(t, config.model.pretrained_embeddings))


PRETRAINED_TASKS = ("language_model", "classification")  # runs model.init_from can start from


def pretrained_tokenizer(init_from: str, run: RunDirectory) -> tuple[Tokenizer, str]:
    """Check ``init_from`` is a language-model or classification run; copy its tokenizer
    files into ``run``. Returns the tokenizer and the source run's task."""
    source = RunDirectory(init_from)
    task = source.read_run_info().get("task")
    if task not in PRETRAINED_TASKS:
        raise UserError(f"model.init_from: {source.path} is a {task} run, not a language "
                        "model's or a classifier's")
    tokenizer = load_tokenizer(source.path, TEXT_TOKENIZER)
    weights_path(source)  # fail now, before any file is written, if there are no weights
    for suffix in (".json", ".model"):
        path = source.path / f"{TEXT_TOKENIZER}{suffix}"
        if path.is_file():
            atomic_write_bytes(run.path / path.name, path.read_bytes())
    return tokenizer, task


def _shorten(text: str, limit: int = 100) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
