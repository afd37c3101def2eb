"""Language-model data: one running token stream (truncated BPTT), or separate lines.

- **stream** (``data.lm_mode: stream``): the text is one sequence. Every line is encoded and
  followed by a line-end symbol: the newline itself for a character model (it is part of the
  text), ``</s>`` for word and sentencepiece models (like PTB's ``<eos>``). The stream starts
  with that symbol too, so its first token is predicted from the same start as generation
  uses. For training it is laid out as ``batch_size`` parallel rows cut into windows of
  ``data.bptt`` tokens; the hidden state is carried from one window to the next (and
  detached), so context reaches back further than the gradient does.
- **lines** (``data.lm_mode: lines``): every line or document is its own sequence, ``<s>``
  then its tokens then ``</s>``, cut to ``data.max_length`` tokens for training and batched by
  length; an optional ``data.condition`` column conditions it (a label or a feature vector).

Token ids stay in numpy arrays taken from Arrow (``Dataset.map``, cached by fingerprint),
never in Python lists, so a large corpus costs a few bytes per token.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import datasets
import numpy as np
import pyarrow.compute as pc
import torch

from ..config import DataConfig
from ..errors import UserError
from ..files import atomic_write_text
from ..run_directory import CONDITIONS_FILE
from ..tokenizers import BOS_ID, EOS_ID, PAD_ID, UNK_ID, Tokenizer
from .batching import IdColumn, pad_rows
from .loading import TextSource, datasets_quiet, load_columns, resolve_format
from .translation import tokenizer_fingerprint

CONDITIONS_FORMAT_VERSION = 1
SPLITS = ("train", "dev", "test")


# --------------------------------------------------------------------------------------
# Reading text


@dataclass
class LMTexts:
    """One split as text: columns ``text``, ``line`` (and ``condition`` when conditioned)."""

    texts: datasets.Dataset
    where: str  # the file (or hub split) the rows came from, for messages
    plain: bool  # a plain text file: blank lines are paragraph breaks, not bad rows

    def __len__(self) -> int:
        return len(self.texts)

    def at(self, row: int) -> str:
        """'FILE line N' of a row, for messages."""
        kind = "row" if self.where.startswith("hub") else "line"
        return f"{self.where} {kind} {self.texts[int(row)]['line']}"


def load_texts(config: DataConfig, path: str) -> LMTexts:
    """Read one file (or hub split): its text column, and the condition column if configured."""
    conditioned = config.condition != ""
    columns = ("text", "condition") if conditioned else ("text",)
    fields = (config.text, config.condition) if conditioned else (config.text,)
    if config.format == "hub":
        source = TextSource(path=path, format="hub", fields=fields, hub_name=config.hub_name,
                            hub_config=config.hub_config or None)
        where, plain = f"hub dataset {config.hub_name!r} split {path!r}", False
    else:
        source = TextSource(path=path, format=config.format, header=config.header)
        where, plain = path, resolve_format(source) == "text"
        if plain and conditioned:
            raise UserError(f"{path}: data.condition needs a TSV, CSV or JSON Lines file with a "
                            "condition column, not plain text")
        if not plain:
            source.fields = fields
    texts = load_columns(source, columns, allow_empty=columns, line_numbers=True)
    return LMTexts(texts, where, plain)


def hold_out_tail(texts: LMTexts, fraction: float) -> tuple[LMTexts, LMTexts]:
    """Split off the last ``fraction`` of the characters, at a line boundary (nanoGPT's split
    of tiny Shakespeare takes the first 90 % of the characters for training)."""
    cumulative = np.cumsum(line_characters(texts.texts))
    total = int(cumulative[-1]) if len(cumulative) else 0
    cut = int(np.searchsorted(cumulative, total * (1.0 - fraction), side="left")) + 1
    if total == 0:
        raise UserError(f"{texts.where}: no text")
    if len(texts) < 2 or cut >= len(texts):
        lines = f"{len(texts)} line{'s' if len(texts) != 1 else ''}"
        raise UserError(f"{texts.where}: too little text ({lines}) to hold out "
                        f"data.dev_fraction {fraction} as the dev split")
    train = LMTexts(texts.texts.select(range(cut)), texts.where, texts.plain)
    dev = LMTexts(texts.texts.select(range(cut, len(texts))),
                  f"{texts.where} (held-out last {fraction:.0%})", texts.plain)
    return train, dev


def load_train_dev(config: DataConfig) -> tuple[LMTexts, LMTexts]:
    """Training and dev text: data.dev, or the last data.dev_fraction of data.train."""
    if not config.train:
        raise UserError("data.train is not set in the config")
    train = load_texts(config, config.train)
    if len(train) == 0:
        raise UserError(f"{config.train}: no text")
    if config.dev:
        return train, load_texts(config, config.dev)
    if config.dev_fraction <= 0:
        raise UserError("data.dev is not set: give a dev file, or data.dev_fraction (e.g. 0.1) "
                        "to hold out the end of the training text")
    return hold_out_tail(train, config.dev_fraction)


def load_split(config: DataConfig, split: str) -> LMTexts:
    """One split of a config by name; ``dev`` may be the held-out end of train."""
    if split not in SPLITS:
        raise UserError(f"split {split!r} is not valid (choices: {', '.join(SPLITS)})")
    if split == "dev" and not config.dev:
        return load_train_dev(config)[1]
    if split == "train":
        return load_train_dev(config)[0]
    path = getattr(config, split)
    if not path:
        raise UserError(f"data.{split} is not set in the config")
    return load_texts(config, path)


def line_characters(texts: datasets.Dataset) -> np.ndarray:
    """[N] characters of each line, plus one for its line end."""
    column = texts.with_format("arrow")[:].column("text")
    return np.asarray(pc.utf8_length(column).to_numpy(zero_copy_only=False), dtype=np.int64) + 1


# --------------------------------------------------------------------------------------
# Tokenizer symbols


def tokenizer_texts(texts: LMTexts, kind: str, lm_mode: str) -> Iterator[str]:
    """The lines a tokenizer is trained on; a character stream keeps its newlines as symbols."""
    suffix = "\n" if kind == "char" and lm_mode == "stream" else ""
    for start in range(0, len(texts), 10_000):  # stream from Arrow, never the whole list
        for text in texts.texts[start: start + 10_000]["text"]:
            yield text + suffix


def line_end_id(tokenizer: Tokenizer) -> int:
    """What ends a line in a stream: the newline of a character vocabulary, else </s>."""
    if tokenizer.kind == "char":
        ids = tokenizer.encode("\n")
        if ids and ids[0] != UNK_ID:
            return ids[0]
    return EOS_ID


def start_id(tokenizer: Tokenizer, lm_mode: str) -> int:
    """The token fed first, before any text: <s> for lines, the line end for a stream."""
    return BOS_ID if lm_mode == "lines" else line_end_id(tokenizer)


# --------------------------------------------------------------------------------------
# Conditions


@dataclass(frozen=True)
class Conditions:
    """What conditions a model: its label names (``label``), or its feature size (``features``).

    Saved in the run directory as conditions.json, so generation can check and map
    ``--condition`` values the way training did.
    """

    kind: str  # "label" | "features"
    labels: tuple[str, ...] = ()
    size: int = 0

    @property
    def inputs(self) -> int:
        """The condition encoder's input size: number of labels, or of features."""
        return len(self.labels) if self.kind == "label" else self.size

    @classmethod
    def from_training(cls, kind: str, texts: LMTexts) -> Conditions:
        """Label names (sorted; numerically when all are integers) or the feature size, as
        found in the training data's condition column."""
        column = pc.utf8_trim_whitespace(texts.texts.with_format("arrow")[:].column("condition"))
        values = [v for v in pc.unique(column).to_pylist() if v]
        if not values:
            raise UserError(f"{texts.where}: the condition column is empty in every row")
        if kind == "label":
            try:
                ordered = sorted(values, key=lambda name: (int(name), name))
            except ValueError:
                ordered = sorted(values)
            return cls("label", labels=tuple(ordered))
        present = np.asarray(pc.not_equal(column, "").to_numpy(zero_copy_only=False), dtype=bool)
        first = int(np.flatnonzero(present)[0])
        value = column[first].as_py()
        parsed = _parse_features(value)
        if parsed is None:
            raise UserError(f"{texts.at(first)}: condition {value[:40]!r} is not "
                            "whitespace-separated numbers (model.language_model.condition_type "
                            "is features)")
        return cls("features", size=len(parsed))

    def parse(self, value: str) -> int | list[float] | None:
        """A label's index or a feature vector; None if ``value`` is not a valid condition."""
        value = value.strip()
        if self.kind == "label":
            return self._index().get(value)
        features = _parse_features(value)
        return features if features is not None and len(features) == self.size else None

    def _index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.labels)}

    def expected(self) -> str:
        """What a valid condition looks like, for messages."""
        if self.kind == "label":
            return f"one of: {', '.join(self.labels)}"
        return f"{self.size} whitespace-separated numbers"

    def tensor(self, value: str, what: str = "condition") -> torch.Tensor:
        """One condition -> [1] label id or [1, D] features; a UserError if invalid."""
        parsed = self.parse(value)
        if parsed is None:
            raise UserError(f"{what} {value!r} is not valid for this model ({self.expected()})")
        if self.kind == "label":
            return torch.tensor([parsed], dtype=torch.long)
        return torch.tensor([parsed], dtype=torch.float32)

    def save(self, directory: Path) -> None:
        data = {"format_version": CONDITIONS_FORMAT_VERSION, "kind": self.kind,
                "labels": list(self.labels), "size": self.size}
        atomic_write_text(Path(directory) / CONDITIONS_FILE,
                          json.dumps(data, indent=1, ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, directory: Path) -> Conditions:
        path = Path(directory) / CONDITIONS_FILE
        if not path.is_file():
            raise UserError(f"{directory}: missing {CONDITIONS_FILE} (what the model is "
                            "conditioned on)")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise UserError(f"{path}: not valid JSON") from None
        ok = (isinstance(data, dict) and data.get("kind") in ("label", "features")
              and isinstance(data.get("labels"), list)
              and all(isinstance(n, str) for n in data["labels"])
              and isinstance(data.get("size"), int))
        if not ok or (data["kind"] == "label" and not data["labels"]) or (
                data["kind"] == "features" and data["size"] < 1):
            raise UserError(f"{path}: expected {{\"kind\": \"label\" | \"features\", "
                            "\"labels\": [...], \"size\": N}")
        return cls(data["kind"], tuple(data["labels"]), data["size"])


def _parse_features(value: str) -> list[float] | None:
    try:
        numbers = [float(x) for x in value.split()]
    except ValueError:
        return None
    if not numbers or not all(math.isfinite(x) for x in numbers):
        return None
    return numbers


# --------------------------------------------------------------------------------------
# Stream mode


@dataclass
class TokenStream:
    """One split as a single sequence: ids [N + 1] (the start symbol first), and how many
    characters of text the N predicted tokens cover (for bits per character)."""

    ids: np.ndarray
    characters: int

    @property
    def tokens(self) -> int:
        return len(self.ids) - 1


def tokenize_stream(texts: LMTexts, tokenizer: Tokenizer) -> TokenStream:
    """Encode every line followed by the line-end symbol, into one array (``Dataset.map``)."""
    end = line_end_id(tokenizer)

    def encode(batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
        ids = tokenizer.encode_batch(batch["text"])
        out = [row + [end] for row in ids]
        if indices and indices[0] == 0:
            out[0] = [end] + out[0]  # the stream's first token is predicted from the start symbol
        return {"ids": out}

    fingerprint = _hash(texts.texts._fingerprint, tokenizer_fingerprint(tokenizer), str(end),
                        "stream v1")
    features = datasets.Features({"ids": datasets.Sequence(datasets.Value("int32"))})
    with datasets_quiet(True):
        encoded = texts.texts.map(encode, batched=True, batch_size=2000, with_indices=True,
                                  features=features, remove_columns=texts.texts.column_names,
                                  new_fingerprint=fingerprint)
    values = IdColumn.from_dataset(encoded, "ids").values
    return TokenStream(values, int(line_characters(texts.texts).sum()))


class Window(NamedTuple):
    """One training batch of stream mode: window ``index`` of ``epoch``, at ``start`` in each row."""

    epoch: int
    index: int  # type: ignore[assignment]  # shadows tuple.index, which no one calls
    start: int
    length: int


@dataclass
class StreamBatch:
    """inputs/targets [B, T] (targets = inputs shifted by one token); window 0 starts an epoch."""

    inputs: torch.Tensor
    targets: torch.Tensor
    window: int

    def to(self, device: torch.device) -> StreamBatch:
        return StreamBatch(self.inputs.to(device, non_blocking=True),
                           self.targets.to(device, non_blocking=True), self.window)


class StreamWindows:
    """A token stream laid out as ``rows`` parallel rows, cut into ``bptt``-token windows.

    Row r of an epoch holds the tokens [offset + r*L, offset + (r+1)*L] of the stream; the
    offset (in [0, bptt), seeded by epoch) moves the window boundaries from one epoch to the
    next. With several processes, rank k takes the k-th contiguous share of the rows (its
    carried state is that of its rows), so together they train on the batches one process would.
    """

    def __init__(self, ids: np.ndarray, rows: int, bptt: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1, where: str = "training data") -> None:
        if rows < 1:
            raise UserError("stream mode needs training.batch_size >= 1 (the number of parallel "
                            "streams; training.batch_tokens is for lines mode)")
        if rows < world_size:
            raise UserError(f"training.batch_size={rows} parallel streams cannot be shared by "
                            f"{world_size} processes: use at least one stream per process")
        n = len(ids) - 1
        self.ids = ids
        self.rows = rows
        self.my_rows = np.array_split(np.arange(rows), world_size)[rank]
        self.bptt = bptt
        self.seed = seed
        if n // rows < 2:
            raise UserError(f"{where}: {n:,} tokens are too few for training.batch_size={rows} "
                            "parallel streams; lower training.batch_size")

    def _layout(self, epoch: int) -> tuple[int, int]:
        """(offset, tokens per row) of an epoch."""
        n = len(self.ids) - 1
        room = min(self.bptt, n - 2 * self.rows + 1)  # keep >= 2 tokens per row
        offset = int(np.random.default_rng([self.seed, epoch]).integers(max(room, 1)))
        return offset, (n - offset) // self.rows

    def epoch_windows(self, epoch: int) -> list[Window]:
        _, per_row = self._layout(epoch)
        return [Window(epoch, i, start, min(self.bptt, per_row - start))
                for i, start in enumerate(range(0, per_row, self.bptt))]

    def batch(self, window: Window) -> StreamBatch:
        offset, per_row = self._layout(window.epoch)
        positions = (offset + self.my_rows[:, None] * per_row
                     + window.start + np.arange(window.length)[None, :])
        inputs = torch.from_numpy(self.ids[positions].astype(np.int64))
        targets = torch.from_numpy(self.ids[positions + 1].astype(np.int64))
        return StreamBatch(inputs, targets, window.index)


def evaluation_layout(ids: np.ndarray, rows: int, context: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and targets [R, L] (int32) that score every token of a stream exactly once.

    The stream is cut into R contiguous rows run in parallel. A row that starts mid-text
    first re-reads the ``context`` tokens before its start with their targets masked (PAD),
    so no token is scored from an empty state; the end of the last row is padded.
    """
    n = len(ids) - 1
    rows = max(1, min(rows, n // max(4 * context, 1)))  # a row must be worth its warm-up
    per_row = math.ceil(n / rows)
    pieces = []
    for r in range(rows):
        first, last = r * per_row, min(n, (r + 1) * per_row)
        if first >= last:
            break
        warm = min(context, first)
        targets = ids[first - warm + 1: last + 1].astype(np.int32)
        targets[:warm] = PAD_ID
        pieces.append((ids[first - warm: last], targets))
    width = max(len(p[0]) for p in pieces)
    inputs = np.full((len(pieces), width), PAD_ID, dtype=np.int32)
    targets = np.full((len(pieces), width), PAD_ID, dtype=np.int32)
    for r, (x, y) in enumerate(pieces):
        inputs[r, :len(x)] = x
        targets[r, :len(y)] = y
    return inputs, targets


# --------------------------------------------------------------------------------------
# Lines mode


@dataclass
class LineCorpus:
    """One split as separate sequences.

    ids row i: the tokens of line i then </s> (</s> dropped when the line was cut to
    ``max_length``); ``rows``: the usable rows (blank or bad ones are left out);
    ``conditions``: [N] label ids or [N, D] features (None when unconditioned).
    """

    ids: IdColumn
    rows: np.ndarray
    conditions: np.ndarray | None
    characters: int  # of the usable rows, one per line end included
    truncated: int
    skipped: int  # blank lines (plain text) and bad rows (data.bad_rows: skip) left out

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def tokens(self) -> int:
        return int(self.ids.lengths()[self.rows].sum())


# Why a row cannot be used (the ``bad`` column).
_OK, _EMPTY, _BAD_CONDITION = 0, 1, 2


def tokenize_lines(texts: LMTexts, tokenizer: Tokenizer, max_length: int | None,
                   conditions: Conditions | None, bad_rows: str = "error") -> LineCorpus:
    """Encode lines (and conditions) with ``Dataset.map``, cached by fingerprint.

    ``max_length`` caps the tokens of a line, </s> included (None: no cap, for scoring).
    An empty text in a plain text file is a paragraph break and is skipped; in a TSV, CSV or
    JSON Lines file it is a bad row, as is a condition that is not valid: an error naming file
    and line, or (``bad_rows: skip``) left out and counted.
    """

    def encode(batch: dict[str, list[Any]]) -> dict[str, Any]:
        ids = [row + [EOS_ID] for row in tokenizer.encode_batch(batch["text"])]
        out: dict[str, Any] = {"ids": ids if max_length is None else [row[:max_length] for row in ids],
               "truncated": [max_length is not None and len(row) > max_length for row in ids],
               "bad": [_OK if text.strip() else _EMPTY for text in batch["text"]]}
        if conditions is not None:
            parsed = [conditions.parse(value) for value in batch["condition"]]
            for i, value in enumerate(parsed):
                if value is None and out["bad"][i] == _OK:
                    out["bad"][i] = _BAD_CONDITION
            if conditions.kind == "label":
                out["condition_id"] = [-1 if v is None else v for v in parsed]
            else:
                out["features"] = [[] if v is None else v for v in parsed]
        return out

    features = {**texts.texts.features, "ids": datasets.Sequence(datasets.Value("int32")),
                "truncated": datasets.Value("bool"), "bad": datasets.Value("int8")}
    if conditions is not None and conditions.kind == "label":
        features["condition_id"] = datasets.Value("int64")
    elif conditions is not None:
        features["features"] = datasets.Sequence(datasets.Value("float32"))
    fingerprint = _hash(texts.texts._fingerprint, tokenizer_fingerprint(tokenizer),
                        str(max_length), repr(conditions), "lines v1")
    with datasets_quiet(True):
        encoded = texts.texts.map(encode, batched=True, batch_size=2000,
                                  features=datasets.Features(features),
                                  new_fingerprint=fingerprint)
    table = encoded.with_format("arrow")[:]
    bad = np.asarray(table.column("bad").to_numpy(zero_copy_only=False))
    usable = bad == _OK
    counted_bad = bad == _BAD_CONDITION if texts.plain else bad != _OK
    if counted_bad.any() and bad_rows == "error":
        first = int(np.flatnonzero(counted_bad)[0])
        raise UserError(f"{texts.at(first)}: {_describe_bad(encoded, first, bad[first], conditions)}"
                        " (fix the row, or set data.bad_rows: skip to skip such rows)")
    rows = np.flatnonzero(usable)
    if len(rows) == 0:
        raise UserError(f"{texts.where}: no usable lines (every line is empty or bad)")
    truncated = np.asarray(table.column("truncated").to_numpy(zero_copy_only=False))
    return LineCorpus(
        ids=IdColumn.from_dataset(encoded, "ids"), rows=rows,
        conditions=_condition_array(table, conditions, usable) if conditions is not None else None,
        characters=int(line_characters(texts.texts)[rows].sum()),
        truncated=int(truncated[rows].sum()), skipped=int((~usable).sum()))


def _describe_bad(encoded: datasets.Dataset, row: int, code: int,
                  conditions: Conditions | None) -> str:
    if code == _EMPTY:
        return "empty text"
    value = encoded[row]["condition"]
    if not value.strip():
        return "no condition"
    assert conditions is not None  # a bad condition needs a conditioned model
    return f"condition {value[:40]!r} is not valid ({conditions.expected()})"


def _condition_array(table: Any, conditions: Conditions, usable: np.ndarray) -> np.ndarray:
    """[N] label ids, or [N, D] features (zeros in unusable rows)."""
    if conditions.kind == "label":
        return np.asarray(table.column("condition_id").to_numpy(zero_copy_only=False),
                          dtype=np.int64)
    flat = table.column("features").combine_chunks().values.to_numpy(zero_copy_only=False)
    matrix = np.zeros((len(usable), conditions.size), dtype=np.float32)
    matrix[usable] = flat.reshape(-1, conditions.size)  # only usable rows hold values
    return matrix


@dataclass
class LinesBatch:
    """inputs [B, T] = <s> y_1 ... ; targets [B, T] = y_1 ... </s> (PAD after the end);
    conditions [B] label ids or [B, D] features, or None."""

    inputs: torch.Tensor
    targets: torch.Tensor
    conditions: torch.Tensor | None

    def to(self, device: torch.device) -> LinesBatch:
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device, non_blocking=True)

        return LinesBatch(self.inputs.to(device, non_blocking=True),
                          self.targets.to(device, non_blocking=True), move(self.conditions))


def make_lines_batch(corpus: LineCorpus, rows: np.ndarray) -> LinesBatch:
    """Corpus rows (indices into ``corpus.ids``) -> a padded batch."""
    padded, _ = pad_rows(corpus.ids, rows, prefix=BOS_ID)  # <s> y_1 ... y_n, then PAD
    # The input at a row's last position is its final token, whose target is PAD: ignored.
    conditions = None if corpus.conditions is None else torch.from_numpy(corpus.conditions[rows])
    return LinesBatch(padded[:, :-1], padded[:, 1:].contiguous(), conditions)


def _hash(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]
