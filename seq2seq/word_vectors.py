"""Pretrained word vectors for a model's embedding (``model.pretrained_embeddings``).

The file is the text format of word2vec, GloVe and fastText: one ``word v1 v2 ... vD`` per
line, with or without word2vec's ``count dim`` header line, most frequent word first (which
is the order ``tokenizer.add_vector_words`` adds words to a word vocabulary in). Only the rows
of the vocabulary's tokens are kept; the other rows of the embedding are drawn again at the
scale of the loaded vectors, so that found and unfound tokens start alike.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from .config import TokenizerConfig
from .errors import UserError
from .tokenizers import SPECIAL_TOKENS, Tokenizer

KEY = "model.pretrained_embeddings"


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line) of a vectors file, without word2vec's ``count dim`` header."""
    if not path.is_file():
        raise UserError(f"{KEY}: no such file {path}")
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                raise UserError(f"{path} line {number}: not UTF-8 text") from None
            fields = line.split(" ")
            if number == 1 and len(fields) == 2 and all(x.isdigit() for x in fields):
                continue
            if line.strip():
                yield number, line


def vector_words(path: Path, limit: int) -> list[str]:
    """The first ``limit`` words of a vectors file, in file order (most frequent first)."""
    return [line.split(" ", 1)[0] for _, line in itertools.islice(_lines(Path(path)), limit)]


def vocabulary_words(config: TokenizerConfig, vectors: str) -> list[str]:
    """The words a fresh word vocabulary takes from the vectors file (``tokenizer.add_vector_words``)."""
    return vector_words(Path(vectors), config.vocab_size) if config.add_vector_words else []


def load_word_vectors(embedding: nn.Embedding, tokenizer: Tokenizer, path: Path) -> int:
    """Copy the vectors of ``tokenizer``'s tokens from ``path`` into ``embedding`` ([V, D]).

    Returns how many of the V - 4 non-special tokens were found. A token's first line wins
    (with a lowercasing tokenizer, the file's words are lowercased to match). Raises UserError
    for a vector of the wrong size, a malformed line, or a file that shares no token with the
    vocabulary (the wrong file, or a casing mismatch).
    """
    path = Path(path)
    vocab = {tokenizer.id_to_token(i): i for i in range(tokenizer.vocab_size)}
    for special in SPECIAL_TOKENS:
        vocab.pop(special, None)
    size = embedding.embedding_dim
    vectors: dict[int, list[float]] = {}  # embedding row -> its vector
    for number, line in _lines(path):
        word, _, numbers = line.rstrip(" ").partition(" ")
        values = numbers.split(" ")
        if len(values) != size:
            raise UserError(f"{path} line {number}: {len(values)} numbers after the word, but "
                            f"model.embedding_size is {size} (the vectors must have that size)")
        if tokenizer.lowercase:
            word = word.lower()
        row = vocab.get(word)
        if row is None or row in vectors:
            continue
        try:
            vectors[row] = [float(x) for x in values]
        except ValueError:
            raise UserError(f"{path} line {number}: expected a word and {size} numbers") from None
    if not vectors:
        raise UserError(f"{KEY}: {path} has a vector for none of the {len(vocab):,} words of the "
                        "vocabulary (another language, or another casing?)")
    found = torch.tensor(list(vectors.values()), dtype=embedding.weight.dtype)
    with torch.no_grad():
        weight = embedding.weight
        weight.normal_(0.0, float(found.std()))
        weight[torch.tensor(list(vectors))] = found.to(weight.device)
        if embedding.padding_idx is not None:
            weight[embedding.padding_idx].zero_()
    return len(vectors)


def start_from_vectors(embedding: nn.Embedding, tokenizer: Tokenizer, path: str) -> str:
    """Load the vectors into a fresh model's embedding; a line for the log says how many were found."""
    found = load_word_vectors(embedding, tokenizer, Path(path))
    words = tokenizer.vocab_size - len(SPECIAL_TOKENS)
    return f"{KEY}: {found:,} of the {words:,} vocabulary words start from their vector in {path}"
