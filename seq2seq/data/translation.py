"""Config -> parallel text (Arrow) -> tokenizers -> token-id columns, ready for batching."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from ..config import DataConfig, TokenizerConfig
from ..errors import UserError
from ..tokenizers import Tokenizer, train_tokenizer
from .batching import IdColumn
from .loading import TextSource, column_array, datasets_quiet, is_blank, load_columns


def text_source(config: DataConfig, split_path: str) -> TextSource:
    """The TextSource of one split (``split_path`` = data.train / dev / test)."""
    if config.format == "hub":
        return TextSource(path=split_path, format="hub", fields=(config.src, config.trg),
                          hub_name=config.hub_name, hub_config=config.hub_config or None)
    is_text_pair = config.format == "text" or (
        config.format == "auto" and not Path(split_path).is_file()
        and Path(f"{split_path}.{config.src}").is_file())
    if is_text_pair:
        return TextSource(path=split_path, format="text", langs=(str(config.src), str(config.trg)))
    return TextSource(path=split_path, format=config.format, fields=(config.src, config.trg),
                      header=config.header)


def load_parallel(config: DataConfig, split: str) -> datasets.Dataset:
    """Columns ``src``/``trg`` of one split, every row as it is (an empty source translates to
    an empty output)."""
    path = getattr(config, split)
    if not path:
        raise UserError(f"data.{split} is not set in the config")
    return load_columns(text_source(config, path), ("src", "trg"))


def load_training_pairs(config: DataConfig) -> tuple[datasets.Dataset, int]:
    """The training pairs and how many were skipped: a pair with an empty side is an error
    naming its line, or, with ``data.bad_rows: skip``, dropped and counted."""
    path = config.train
    if not path:
        raise UserError("data.train is not set in the config")
    texts = load_columns(text_source(config, path), ("src", "trg"), line_numbers=True)
    table = texts.with_format("arrow")[:]
    no_src, no_trg = is_blank(table.column("src")), is_blank(table.column("trg"))
    bad = no_src | no_trg
    skipped = int(bad.sum())
    if skipped and config.bad_rows == "error":
        first = int(np.flatnonzero(bad)[0])
        where = (f"hub dataset {config.hub_name!r} split {path!r} row" if config.format == "hub"
                 else f"{path} line")
        side = f"source (data.src: {config.src!r})" if no_src[first] else \
            f"target (data.trg: {config.trg!r})"
        raise UserError(f"{where} {texts[first]['line']}: empty {side}; fix the pair, or set "
                        "data.bad_rows: skip to skip such pairs")
    if skipped == len(texts):
        raise UserError(f"{path}: no sentence pairs"
                        + (" left after skipping those with an empty side" if skipped else ""))
    if skipped:
        with datasets_quiet(True):
            texts = texts.select(np.flatnonzero(~bad))
    return texts.remove_columns("line"), skipped


def train_tokenizers(texts: datasets.Dataset, config: TokenizerConfig,
                     seed: int) -> tuple[Tokenizer, Tokenizer]:
    """Train the source and target tokenizers (one shared when ``joint``)."""
    options: dict[str, Any] = dict(kind=config.kind, vocab_size=config.vocab_size,
                                   model_type=config.model_type,
                                   min_freq=config.min_freq, max_sentences=config.max_sentences,
                                   lowercase=config.lowercase, seed=seed)

    def column(name: str) -> Iterator[str]:
        for start in range(0, len(texts), 10_000):  # stream from Arrow, never the whole list
            yield from texts[start: start + 10_000][name]

    if config.joint:
        def both() -> Iterator[str]:
            yield from column("src")
            yield from column("trg")
        shared = train_tokenizer(both(), **options)
        return shared, shared
    return train_tokenizer(column("src"), **options), train_tokenizer(column("trg"), **options)


@dataclass
class ParallelCorpus:
    """One tokenized split: raw text (Arrow) and id columns (numpy views of Arrow)."""

    texts: datasets.Dataset
    src: IdColumn
    trg: IdColumn
    truncated: int  # sentences cut to the configured maximum length

    def __len__(self) -> int:
        return len(self.src)


def tokenizer_fingerprint(tokenizer: Tokenizer) -> str:
    """A hash of the vocabulary and options, so cached tokenizations are never stale."""
    digest = hashlib.sha256(f"{tokenizer.kind}|{tokenizer.vocab_size}|".encode())
    for i in range(tokenizer.vocab_size):
        digest.update(tokenizer.id_to_token(i).encode("utf-8", "surrogatepass") + b"\0")
    digest.update(repr(getattr(tokenizer, "lowercase", None)).encode())
    return digest.hexdigest()[:16]


def tokenize_parallel(texts: datasets.Dataset, src_tokenizer: Tokenizer,
                      trg_tokenizer: Tokenizer, max_src_length: int,
                      max_trg_length: int) -> ParallelCorpus:
    """Encode both sides with ``Dataset.map`` (batched, cached on disk by fingerprint).

    Lengths exclude </s> and <s>, which batching adds; a side longer than its maximum is
    cut to it (max - 1 tokens plus </s>) and counted in ``truncated``.
    """
    src_limit, trg_limit = max_src_length - 1, max_trg_length - 1

    def encode(batch: dict[str, list[str]]) -> dict[str, Any]:
        src = src_tokenizer.encode_batch(batch["src"])
        trg = trg_tokenizer.encode_batch(batch["trg"])
        cut = [len(s) > src_limit or len(t) > trg_limit for s, t in zip(src, trg)]
        return {"src_ids": [s[:src_limit] for s in src], "trg_ids": [t[:trg_limit] for t in trg],
                "truncated": cut}

    fingerprint = hashlib.sha256("|".join([
        texts._fingerprint, tokenizer_fingerprint(src_tokenizer),
        tokenizer_fingerprint(trg_tokenizer), str(src_limit), str(trg_limit), "v1",
    ]).encode()).hexdigest()[:32]
    features = datasets.Features({
        "src": datasets.Value("string"), "trg": datasets.Value("string"),
        "src_ids": datasets.Sequence(datasets.Value("int32")),
        "trg_ids": datasets.Sequence(datasets.Value("int32")),
        "truncated": datasets.Value("bool"),
    })
    with datasets_quiet(True):
        encoded = texts.map(encode, batched=True, batch_size=2000, features=features,
                            new_fingerprint=fingerprint)
    truncated = int(column_array(encoded, "truncated").sum())
    return ParallelCorpus(texts=encoded, src=IdColumn.from_dataset(encoded, "src_ids"),
                          trg=IdColumn.from_dataset(encoded, "trg_ids"), truncated=truncated)
