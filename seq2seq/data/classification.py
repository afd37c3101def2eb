"""Config -> labelled texts (Arrow) -> label vocabulary -> token ids, for the classification head.

A row with an empty text or without a label stops loading with a one-line error naming file and
line, or, with ``data.bad_rows: skip``, is dropped and counted. Labels are names taken from the
training data (strings, or integers written as text) and sorted deterministically; a dev or test
label that training never saw is an error naming file, line and label. Texts are tokenized with
``Dataset.map`` (cached by fingerprint) and cut to ``data.max_length`` tokens, </s> included.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from ..config import DataConfig
from ..errors import UserError
from ..files import atomic_write_text
from ..run_directory import LABELS_FILE
from ..tokenizers import EOS_ID, Tokenizer
from .batching import IdColumn, pad_rows
from .loading import (
    TextSource,
    column_array,
    datasets_quiet,
    is_blank,
    load_columns,
    resolve_format,
)
from .translation import tokenizer_fingerprint

LABELS_FORMAT_VERSION = 1
SPLITS = ("train", "dev", "test")


# --------------------------------------------------------------------------------------
# Label names


@dataclass(frozen=True)
class LabelVocabulary:
    """The class names of a classifier; class i is ``names[i]``."""

    names: tuple[str, ...]

    @classmethod
    def from_names(cls, names: Iterable[str]) -> LabelVocabulary:
        """Sorted numerically when every name is an integer ("2" before "10"), else as text."""
        unique = set(names)
        try:
            ordered = sorted(unique, key=lambda name: (int(name), name))
        except ValueError:
            ordered = sorted(unique)
        return cls(tuple(ordered))

    def __len__(self) -> int:
        return len(self.names)

    def index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.names)}

    def save(self, directory: Path) -> None:
        data = {"format_version": LABELS_FORMAT_VERSION, "labels": list(self.names)}
        atomic_write_text(Path(directory) / LABELS_FILE,
                          json.dumps(data, indent=1, ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, directory: Path) -> LabelVocabulary:
        path = Path(directory) / LABELS_FILE
        if not path.is_file():
            raise UserError(f"{directory}: missing {LABELS_FILE} (the classifier's label names)")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise UserError(f"{path}: not valid JSON") from None
        names = data.get("labels") if isinstance(data, dict) else None
        if (not isinstance(names, list) or len(names) < 2
                or not all(isinstance(n, str) for n in names) or len(set(names)) != len(names)):
            raise UserError(f"{path}: expected an object whose \"labels\" are two or more "
                            "distinct names")
        return cls(tuple(names))


# --------------------------------------------------------------------------------------
# Loading


@dataclass
class LabeledTexts:
    """One split as text: columns ``text``, ``label`` (stripped of surrounding spaces), ``line``."""

    texts: datasets.Dataset
    where: str  # the file (or hub split) the rows came from, for messages
    skipped: int = 0  # rows dropped under data.bad_rows: skip
    unit: str = "line"  # what the ``line`` column counts: file lines, or a hub split's rows

    def __len__(self) -> int:
        return len(self.texts)

    def at(self, row: int) -> str:
        """'FILE line N' of a row, for messages."""
        return f"{self.where} {self.unit} {self.texts[int(row)]['line']}"


def labeled_source(config: DataConfig, path: str) -> TextSource:
    """The TextSource of one split: columns data.text and data.label."""
    if config.format == "hub":
        return TextSource(path=path, format="hub", fields=(config.text, config.label),
                          hub_name=config.hub_name, hub_config=config.hub_config or None)
    return TextSource(path=path, format=config.format, fields=(config.text, config.label),
                      header=config.header)


def load_labeled(config: DataConfig, path: str) -> LabeledTexts:
    """Read a file (or hub split) of texts and labels; handle bad rows as data.bad_rows says."""
    source = labeled_source(config, path)
    if resolve_format(source) == "text":
        raise UserError(f"{path}: a plain text file has no labels; give a TSV, CSV or JSON Lines "
                        "file with text and label columns (data.text, data.label)")
    # A row may lack its label (skipped or reported below); a missing text column is the
    # loader's error, as it usually means data.text names the wrong column.
    texts = load_columns(source, ("text", "label"), allow_empty=("label",), line_numbers=True)
    hub = config.format == "hub"
    where = f"hub dataset {config.hub_name!r} split {path!r}" if hub else str(path)
    unit = "row" if hub else "line"
    with datasets_quiet(True):
        texts = texts.map(_strip_labels, batched=True, batch_size=10_000,
                          new_fingerprint=_hash(texts._fingerprint, "strip labels v1"))
    if len(texts) == 0:
        raise UserError(f"{where}: no rows (a header at most); expected texts with labels")
    loaded = LabeledTexts(texts, where, unit=unit)
    table = texts.with_format("arrow")[:]
    no_text = is_blank(table.column("text"))
    no_label = is_blank(table.column("label"))
    bad = no_text | no_label
    if not bad.any():
        return loaded
    first = int(np.flatnonzero(bad)[0])
    if config.bad_rows == "error":
        what = (f"empty text (data.text: {config.text!r})" if no_text[first] else
                f"no label (data.label: {config.label!r} is missing or empty)")
        raise UserError(f"{loaded.at(first)}: {what}; fix the row, or set data.bad_rows: skip "
                        "to skip such rows")
    keep = np.flatnonzero(~bad)
    if len(keep) == 0:
        raise UserError(f"{where}: every row has an empty text or no label")
    return LabeledTexts(texts.select(keep), where, skipped=int(bad.sum()), unit=unit)


def load_train_dev(config: DataConfig, seed: int) -> tuple[LabeledTexts, LabeledTexts]:
    """The training and dev texts: data.dev, or a seeded random data.dev_fraction of train.

    The held-out part is a random sample (not the file's tail) because labelled corpora are
    often sorted by label (IMDB is).
    """
    if not config.train:
        raise UserError("data.train is not set in the config")
    train = load_labeled(config, config.train)
    if config.dev:
        return train, load_labeled(config, config.dev)
    if config.dev_fraction <= 0:
        raise UserError("data.dev is not set: give a dev file, or data.dev_fraction to hold out "
                        "part of the training data")
    rows = np.random.default_rng(seed).permutation(len(train))
    held = max(1, round(len(train) * config.dev_fraction))
    if held >= len(train):
        raise UserError(f"{train.where}: too few rows ({len(train)}) to hold out "
                        f"data.dev_fraction {config.dev_fraction}")
    dev_rows, train_rows = np.sort(rows[:held]), np.sort(rows[held:])
    return (LabeledTexts(train.texts.select(train_rows), train.where, train.skipped, train.unit),
            LabeledTexts(train.texts.select(dev_rows), f"{train.where} (held-out dev part)",
                         unit=train.unit))


def load_split(config: DataConfig, split: str, seed: int) -> LabeledTexts:
    """One split of a config by name (``dev`` may be the held-out part of train)."""
    if split not in SPLITS:
        raise UserError(f"split {split!r} is not valid (choices: {', '.join(SPLITS)})")
    if split == "dev" and not config.dev:
        return load_train_dev(config, seed)[1]
    path = getattr(config, split)
    if not path:
        raise UserError(f"data.{split} is not set in the config")
    return load_labeled(config, path)


def check_labels(texts: LabeledTexts, labels: LabelVocabulary, known_from: str) -> None:
    """Every label of ``texts`` must be one of ``labels``; else name the first row that is not."""
    column = texts.texts.with_format("arrow")[:].column("label")
    known = pc.is_in(column, value_set=pa.array(list(labels.names), type=pa.string()))
    unknown = np.flatnonzero(~np.asarray(known.to_numpy(zero_copy_only=False), dtype=bool))
    if len(unknown):
        row = int(unknown[0])
        label = texts.texts[row]["label"]
        raise UserError(f"{texts.at(row)}: label {label!r} does not occur in {known_from} "
                        f"(its labels: {', '.join(labels.names)})")


def label_names(texts: LabeledTexts) -> LabelVocabulary:
    """The sorted label names of (training) texts; two or more are needed."""
    column = texts.texts.with_format("arrow")[:].column("label")
    labels = LabelVocabulary.from_names(pc.unique(column).to_pylist())
    if len(labels) < 2:
        raise UserError(f"{texts.where}: the training data has only one label "
                        f"({', '.join(labels.names) or 'none'}); a classifier needs two or more")
    return labels


def _strip_labels(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
    return {"label": [label.strip() for label in batch["label"]]}


def _hash(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


# --------------------------------------------------------------------------------------
# Tokenization


def truncate(ids: list[int], limit: int, how: str) -> list[int]:
    """Keep ``limit`` ids: the first (head), the last (tail), or the first and last halves."""
    if len(ids) <= limit:
        return ids
    if how == "head":
        return ids[:limit]
    if how == "tail":
        return ids[len(ids) - limit:]
    tail = limit // 2  # head_tail: the opening and the conclusion of a review both carry signal
    return ids[: limit - tail] + (ids[len(ids) - tail:] if tail else [])


def encode_texts(tokenizer: Tokenizer, texts: list[str], max_length: int,
                 truncation: str) -> tuple[list[list[int]], list[bool]]:
    """Token ids of each text, cut to ``max_length - 1`` (room for </s>); which ones were cut.

    One function for training data and for prediction, so both see texts the same way.
    """
    limit = max_length - 1
    encoded = tokenizer.encode_batch(list(texts))
    return ([truncate(ids, limit, truncation) for ids in encoded],
            [len(ids) > limit for ids in encoded])


@dataclass
class LabeledCorpus:
    """One tokenized split: raw rows (Arrow), token ids and class indices."""

    texts: datasets.Dataset  # text, label, line, ids, label_id, truncated
    ids: IdColumn  # without </s>, which batching adds
    labels: np.ndarray  # [N] class indices
    truncated: int  # texts cut to data.max_length tokens
    skipped: int  # rows dropped as bad (data.bad_rows: skip)
    where: str

    def __len__(self) -> int:
        return len(self.labels)


def tokenize_labeled(texts: LabeledTexts, tokenizer: Tokenizer, labels: LabelVocabulary,
                     max_length: int, truncation: str) -> LabeledCorpus:
    """Encode texts and labels with ``Dataset.map`` (batched, cached on disk by fingerprint).

    Labels must already be known (:func:`check_labels`).
    """
    index = labels.index()

    def encode(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        ids, cut = encode_texts(tokenizer, batch["text"], max_length, truncation)
        return {"ids": ids, "label_id": [index[label] for label in batch["label"]],
                "truncated": cut}

    fingerprint = _hash(texts.texts._fingerprint, tokenizer_fingerprint(tokenizer),
                        str(max_length), truncation, json.dumps(labels.names), "v1")
    features = datasets.Features({
        **texts.texts.features,
        "ids": datasets.Sequence(datasets.Value("int32")),
        "label_id": datasets.Value("int32"),
        "truncated": datasets.Value("bool"),
    })
    with datasets_quiet(True):
        encoded = texts.texts.map(encode, batched=True, batch_size=2000, features=features,
                                  new_fingerprint=fingerprint)
    return LabeledCorpus(texts=encoded, ids=IdColumn.from_dataset(encoded, "ids"),
                         labels=column_array(encoded, "label_id").astype(np.int64),
                         truncated=int(column_array(encoded, "truncated").sum()),
                         skipped=texts.skipped, where=texts.where)


# --------------------------------------------------------------------------------------
# Batches


@dataclass
class ClassificationBatch:
    """ids [B, S] ending in </s> (padded with 0), lengths [B] (CPU), labels [B] or None."""

    ids: torch.Tensor
    lengths: torch.Tensor
    labels: torch.Tensor | None
    indices: np.ndarray  # corpus row of each batch row

    def to(self, device: torch.device) -> ClassificationBatch:
        labels = None if self.labels is None else self.labels.to(device, non_blocking=True)
        return ClassificationBatch(self.ids.to(device, non_blocking=True), self.lengths, labels,
                                   self.indices)


def make_classification_batch(ids: IdColumn, labels: np.ndarray | None,
                              indices: np.ndarray) -> ClassificationBatch:
    padded, lengths = pad_rows(ids, indices, suffix=EOS_ID)
    gold = None if labels is None else torch.from_numpy(labels[indices].astype(np.int64))
    return ClassificationBatch(padded, lengths, gold, indices)
