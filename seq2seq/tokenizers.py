"""Tokenizers behind one interface: sentencepiece subwords, characters, or whitespace words.

Every tokenizer uses the same special ids (``PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3``) so
model heads never need to ask which kind they were given. ``encode`` never adds BOS/EOS; callers
add them where their task needs them.

Files written by :meth:`Tokenizer.save`:

* sentencepiece: ``{name}.model`` (the serialized model proto) plus a sidecar ``{name}.json``
  ``{"kind": "sentencepiece", "format_version": 1, "lowercase": ...}``.
* char / word: ``{name}.json`` ``{"kind", "format_version": 1, "lowercase", "tokens": [...]}``.

:func:`load_tokenizer` reads ``{name}.json`` first (its ``kind`` is authoritative); a lone
``{name}.model`` without a sidecar is loaded as a sentencepiece model with ``lowercase=False``.
"""

from __future__ import annotations

import abc
import collections
import io
import json
import os
import random
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import sentencepiece as spm

from seq2seq.errors import UserError
from seq2seq.files import atomic_write_bytes

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
SPECIAL_TOKENS = ("<pad>", "<unk>", "<s>", "</s>")
KINDS = ("sentencepiece", "char", "word")
MODEL_TYPES = ("unigram", "bpe")
FORMAT_VERSION = 1
MIN_VOCAB_SIZE = len(SPECIAL_TOKENS) + 1

# What char/word tokenizers print for UNK_ID; sentencepiece uses the same mark, so decoded text
# looks alike whatever the tokenizer kind.
UNK_SURFACE = "\u2047"

# Ids dropped by decode: they carry no text.
_SILENT_IDS = frozenset((PAD_ID, BOS_ID, EOS_ID))

# sentencepiece rejects 0 < input_sentence_size <= 100, and we sample ourselves anyway.
_SPM_NO_SAMPLING = 0

# Below this many texts, encode_batch encodes them one by one: sentencepiece's batch call
# starts its threads on every call, 0.1-0.2 ms however short the list (more on a busy
# machine: a server's event loop waited there for each one-sentence request); 128 texts
# take as long either way, 20,000 take 36 ms batched against 96 ms one by one (2 cores).
BATCH_ENCODE_MIN = 128


class Tokenizer(abc.ABC):
    """Maps text to ids and back. Special ids are the same for every kind."""

    kind: str
    pad_id = PAD_ID
    unk_id = UNK_ID
    bos_id = BOS_ID
    eos_id = EOS_ID

    def __init__(self, lowercase: bool = False) -> None:
        self.lowercase = lowercase

    def _normalize(self, text: str) -> str:
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as err:  # a lone surrogate: bytes decoded with errors=surrogateescape
                raise UserError(f"text {text[:40]!r} is not valid Unicode (lone surrogate "
                                f"at character {err.start + 1})") from None
        return text.lower() if self.lowercase else text

    @property
    @abc.abstractmethod
    def vocab_size(self) -> int:
        """Number of ids, including the 4 special tokens."""

    @abc.abstractmethod
    def encode(self, text: str) -> list[int]:
        """Ids of ``text`` without BOS/EOS; symbols outside the vocabulary become ``UNK_ID``."""

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """``[encode(t) for t in texts]``, possibly faster."""
        return [self.encode(t) for t in texts]

    @abc.abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """Detokenized text of ``ids``; PAD/BOS/EOS are skipped (decoding does not stop at EOS)."""

    @abc.abstractmethod
    def tokenize(self, text: str) -> list[str]:
        """The pieces of ``text`` as strings, for display (unknown symbols shown as written)."""

    @abc.abstractmethod
    def id_to_token(self, i: int) -> str:
        """The vocabulary entry for id ``i``."""

    @abc.abstractmethod
    def count_unknown(self, text: str) -> int:
        """How many characters (char, sentencepiece) or words (word) of ``text`` map to UNK."""

    @abc.abstractmethod
    def save(self, directory: Path, name: str) -> list[Path]:
        """Write the tokenizer as ``directory/{name}.*`` and return the paths written."""

    def _check_ids(self, ids: Sequence[int]) -> list[int]:
        # int() accepts numpy/torch scalars, so a 1-D tensor can be decoded directly.
        out = [int(i) for i in ids]
        size = self.vocab_size
        for i in out:
            if not 0 <= i < size:
                raise ValueError(f"token id {i} is outside the vocabulary (size {size})")
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size}, lowercase={self.lowercase})"


class _VocabTokenizer(Tokenizer):
    """Shared code of the char and word tokenizers: an explicit token list and a dict lookup."""

    def __init__(self, tokens: Sequence[str], lowercase: bool = False) -> None:
        super().__init__(lowercase)
        self._tokens = list(tokens)
        # Specials are left out so that text containing e.g. "<s>" cannot inject control ids.
        self._index = {t: i for i, t in enumerate(self._tokens) if i >= len(SPECIAL_TOKENS)}

    @staticmethod
    @abc.abstractmethod
    def _split(text: str) -> list[str]:
        """The symbols of ``text`` (already normalized)."""

    @staticmethod
    @abc.abstractmethod
    def _join(symbols: list[str]) -> str:
        """Inverse of ``_split`` (up to whitespace for words)."""

    @property
    def vocab_size(self) -> int:
        return len(self._tokens)

    def encode(self, text: str) -> list[int]:
        get = self._index.get
        return [get(s, UNK_ID) for s in self._split(self._normalize(text))]

    def decode(self, ids: Sequence[int]) -> str:
        tokens = self._tokens
        kept = [i for i in self._check_ids(ids) if i not in _SILENT_IDS]
        return self._join([UNK_SURFACE if i == UNK_ID else tokens[i] for i in kept])

    def tokenize(self, text: str) -> list[str]:
        return self._split(self._normalize(text))

    def id_to_token(self, i: int) -> str:
        return self._tokens[self._check_ids([i])[0]]

    def count_unknown(self, text: str) -> int:
        index = self._index
        return sum(1 for s in self._split(self._normalize(text)) if s not in index)

    def save(self, directory: Path, name: str) -> list[Path]:
        meta = {
            "kind": self.kind,
            "format_version": FORMAT_VERSION,
            "lowercase": self.lowercase,
            "tokens": self._tokens,
        }
        path = Path(directory) / f"{name}.json"
        atomic_write_bytes(path, _json_bytes(meta))
        return [path]


class CharTokenizer(_VocabTokenizer):
    """One id per character, whitespace and newlines included."""

    kind = "char"

    @staticmethod
    def _split(text: str) -> list[str]:
        return list(text)

    @staticmethod
    def _join(symbols: list[str]) -> str:
        return "".join(symbols)


class WordTokenizer(_VocabTokenizer):
    """One id per whitespace-separated word; decoding joins words with single spaces."""

    kind = "word"

    @staticmethod
    def _split(text: str) -> list[str]:
        return text.split()

    @staticmethod
    def _join(symbols: list[str]) -> str:
        return " ".join(symbols)


class SentencePieceTokenizer(Tokenizer):
    """A sentencepiece unigram/BPE model; it does its own normalization and detokenization."""

    kind = "sentencepiece"

    def __init__(
        self, model_proto: bytes, lowercase: bool = False, *, source: str = "sentencepiece model"
    ) -> None:
        """``source`` names where the model came from, for error messages."""
        super().__init__(lowercase)
        try:
            self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
        except (RuntimeError, OSError) as e:
            raise UserError(f"{source}: not a valid sentencepiece model ({_first_line(e)})") from e
        found = (self._sp.pad_id(), self._sp.unk_id(), self._sp.bos_id(), self._sp.eos_id())
        if found != (PAD_ID, UNK_ID, BOS_ID, EOS_ID):
            raise UserError(
                f"{source}: special ids (pad, unk, bos, eos) are {found}, "
                f"expected {(PAD_ID, UNK_ID, BOS_ID, EOS_ID)}; retrain the tokenizer with seq2seq"
            )

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return self._sp.encode(self._normalize(text), out_type=int)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        normalized = [self._normalize(t) for t in texts]
        if len(normalized) < BATCH_ENCODE_MIN:
            return [self._sp.encode(t, out_type=int) for t in normalized]
        # One call into C++ for the whole batch: it encodes on several threads.
        return self._sp.encode(normalized, out_type=int)

    def decode(self, ids: Sequence[int]) -> str:
        return self._sp.decode([i for i in self._check_ids(ids) if i not in _SILENT_IDS])

    def tokenize(self, text: str) -> list[str]:
        return self._sp.encode(self._normalize(text), out_type=str)

    def id_to_token(self, i: int) -> str:
        return self._sp.id_to_piece(self._check_ids([i])[0])

    def count_unknown(self, text: str) -> int:
        # Adjacent unknown characters share one UNK piece, so count the characters it spans.
        normalized = self._normalize(text)
        mapping = self._sp.encode(normalized, out_type="offset_mapping")
        return sum(
            sum(1 for c in normalized[begin:end] if not c.isspace())
            for i, (begin, end) in zip(mapping["ids"], mapping["offsets"])
            if i == UNK_ID
        )

    def save(self, directory: Path, name: str) -> list[Path]:
        directory = Path(directory)
        model_path, meta_path = directory / f"{name}.model", directory / f"{name}.json"
        atomic_write_bytes(model_path, self._sp.serialized_model_proto())
        meta = {"kind": self.kind, "format_version": FORMAT_VERSION, "lowercase": self.lowercase}
        atomic_write_bytes(meta_path, _json_bytes(meta))
        return [model_path, meta_path]


# ----------------------------------------------------------------------------- training


def train_tokenizer(
    texts: Iterable[str],
    kind: str,
    *,
    vocab_size: int = 8000,
    model_type: str = "unigram",
    min_freq: int = 1,
    character_coverage: float = 1.0,
    max_sentences: int = 2_000_000,
    lowercase: bool = False,
    seed: int = 0,
    extra_words: Sequence[str] = (),
) -> Tokenizer:
    """Train a tokenizer of ``kind`` ("sentencepiece", "char" or "word") on ``texts``.

    ``vocab_size`` includes the 4 specials and caps every kind (sentencepiece may end up smaller
    on a small corpus). ``model_type``, ``character_coverage``, ``max_sentences`` and ``seed``
    only matter for sentencepiece, ``min_freq`` only for char/word. A word vocabulary takes
    ``extra_words`` (e.g. the words of pretrained vectors) after the texts' own words, in their
    order, while it has room. The result depends only on the texts and the arguments.
    """
    _check_train_args(kind, vocab_size, model_type, min_freq, character_coverage, max_sentences)
    if kind == "sentencepiece":
        return _train_sentencepiece(
            texts,
            vocab_size=vocab_size,
            model_type=model_type,
            character_coverage=character_coverage,
            max_sentences=max_sentences,
            lowercase=lowercase,
            seed=seed,
        )
    cls = CharTokenizer if kind == "char" else WordTokenizer
    counts: collections.Counter[str] = collections.Counter()
    for text in texts:
        counts.update(cls._split(text.lower() if lowercase else text))
    if not counts:
        raise UserError(f"cannot train a {kind} tokenizer: the training texts are empty")
    tokens = _build_vocab(counts, vocab_size, min_freq)
    if kind == "word" and extra_words:
        tokens = _extend_vocab(tokens, extra_words, lowercase, vocab_size)
    if len(tokens) == len(SPECIAL_TOKENS):
        raise UserError(
            f"cannot train a {kind} tokenizer: no symbol occurs at least min_freq={min_freq} times"
        )
    return cls(tokens, lowercase)


def _check_train_args(
    kind: str, vocab_size: int, model_type: str, min_freq: int, character_coverage: float, max_sentences: int
) -> None:
    if kind not in KINDS:
        raise UserError(f"unknown tokenizer kind {kind!r}; choose one of {', '.join(KINDS)}")
    if model_type not in MODEL_TYPES:
        raise UserError(
            f"unknown sentencepiece model_type {model_type!r}; choose one of {', '.join(MODEL_TYPES)}"
        )
    if not isinstance(vocab_size, int) or vocab_size < MIN_VOCAB_SIZE:
        raise UserError(
            f"vocab_size {vocab_size!r} is too small; it must be an integer >= {MIN_VOCAB_SIZE} "
            f"(the {len(SPECIAL_TOKENS)} special tokens plus at least one symbol)"
        )
    if not isinstance(min_freq, int) or min_freq < 1:
        raise UserError(f"min_freq {min_freq!r} is invalid; it must be an integer >= 1")
    if not 0.0 < character_coverage <= 1.0:
        raise UserError(f"character_coverage {character_coverage!r} is invalid; it must be in (0, 1]")
    if not isinstance(max_sentences, int) or max_sentences < 1:
        raise UserError(f"max_sentences {max_sentences!r} is invalid; it must be an integer >= 1")


def _build_vocab(counts: collections.Counter[str], vocab_size: int, min_freq: int) -> list[str]:
    """Specials, then symbols with count >= min_freq, most frequent first, ties by the symbol."""
    kept = [s for s, c in counts.items() if c >= min_freq and s not in SPECIAL_TOKENS]
    kept.sort(key=lambda s: (-counts[s], s))
    return [*SPECIAL_TOKENS, *kept[: vocab_size - len(SPECIAL_TOKENS)]]


def _extend_vocab(tokens: list[str], words: Sequence[str], lowercase: bool,
                  vocab_size: int) -> list[str]:
    """``tokens`` then the new ones of ``words`` (in order, lowercased if asked), up to ``vocab_size``."""
    known = set(tokens)
    for word in words:
        if len(tokens) >= vocab_size:
            break
        word = word.lower() if lowercase else word
        if word not in known and word.strip() == word and word:
            tokens.append(word)
            known.add(word)
    return tokens


def _sample_sentences(texts: Iterable[str], k: int, seed: int, transform: Callable[[str], str]) -> list[str]:
    """Uniform sample of at most ``k`` non-blank texts (reservoir sampling, seeded).

    sentencepiece's own sampler draws from an unseeded random device, so we sample here and
    hand it at most ``k`` sentences; with shuffling off its output is then deterministic.
    """
    rng = random.Random(seed)
    sample: list[str] = []
    seen = 0
    for text in texts:
        if not text.strip():
            continue
        if len(sample) < k:
            sample.append(transform(text))
        else:
            j = rng.randrange(seen + 1)
            if j < k:
                sample[j] = transform(text)
        seen += 1
    return sample


def _train_sentencepiece(
    texts: Iterable[str],
    *,
    vocab_size: int,
    model_type: str,
    character_coverage: float,
    max_sentences: int,
    lowercase: bool,
    seed: int,
) -> SentencePieceTokenizer:
    sample = _sample_sentences(texts, max_sentences, seed, str.lower if lowercase else str)
    if not sample:
        raise UserError("cannot train a sentencepiece tokenizer: the training texts are empty")
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sample),
            model_writer=model,
            model_type=model_type,
            vocab_size=vocab_size,
            # A small corpus may not support vocab_size pieces; take what it has instead of failing.
            hard_vocab_limit=False,
            character_coverage=character_coverage,
            pad_id=PAD_ID,
            unk_id=UNK_ID,
            bos_id=BOS_ID,
            eos_id=EOS_ID,
            pad_piece=SPECIAL_TOKENS[PAD_ID],
            unk_piece=SPECIAL_TOKENS[UNK_ID],
            bos_piece=SPECIAL_TOKENS[BOS_ID],
            eos_piece=SPECIAL_TOKENS[EOS_ID],
            input_sentence_size=_SPM_NO_SAMPLING,
            shuffle_input_sentence=False,
            num_threads=min(2, os.cpu_count() or 1),
            minloglevel=2,
        )
    except RuntimeError as e:
        message = f"sentencepiece training failed (vocab_size={vocab_size}): {_first_line(e)}"
        raise UserError(message) from e
    return SentencePieceTokenizer(model.getvalue(), lowercase, source="trained sentencepiece model")


# ----------------------------------------------------------------------------- loading


def load_tokenizer(directory: Path, name: str) -> Tokenizer:
    """Load what :meth:`Tokenizer.save` wrote as ``directory/{name}.*``; raises UserError if unusable."""
    directory = Path(directory)
    meta_path, model_path = directory / f"{name}.json", directory / f"{name}.model"
    if meta_path.exists():
        meta = _read_meta(meta_path)
    elif model_path.exists():
        meta = {"kind": "sentencepiece", "lowercase": False}
    else:
        raise UserError(
            f"no tokenizer {name!r} in {directory}: expected {meta_path.name} or {model_path.name}"
        )

    if meta["kind"] == "sentencepiece":
        try:
            proto = model_path.read_bytes()
        except OSError as e:
            raise UserError(f"cannot read sentencepiece model {model_path}: {e.strerror or e}") from e
        return SentencePieceTokenizer(proto, meta["lowercase"], source=str(model_path))
    cls = CharTokenizer if meta["kind"] == "char" else WordTokenizer
    return cls(_check_tokens(meta_path, meta, cls), meta["lowercase"])


def _read_meta(path: Path) -> dict[str, Any]:
    """The validated header of a tokenizer JSON file (``tokens`` is checked separately)."""
    try:
        meta = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as e:
        raise UserError(f"cannot read tokenizer file {path}: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise UserError(f"tokenizer file {path} is corrupt: not UTF-8 text") from e
    except json.JSONDecodeError as e:
        message = f"tokenizer file {path} is corrupt: invalid JSON ({e.msg} at line {e.lineno})"
        raise UserError(message) from e
    if not isinstance(meta, dict):
        raise UserError(f"tokenizer file {path} is corrupt: expected a JSON object")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise UserError(
            f"tokenizer file {path} has format_version {version!r}; this version reads {FORMAT_VERSION}"
        )
    if meta.get("kind") not in KINDS:
        raise UserError(
            f"tokenizer file {path} has unknown kind {meta.get('kind')!r}; "
            f"expected one of {', '.join(KINDS)}"
        )
    if not isinstance(meta.get("lowercase"), bool):
        raise UserError(f"tokenizer file {path} is corrupt: 'lowercase' must be true or false")
    return meta


def _check_tokens(path: Path, meta: dict[str, Any], cls: type[_VocabTokenizer]) -> list[str]:
    tokens = meta.get("tokens")
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise UserError(f"tokenizer file {path} is corrupt: 'tokens' must be a list of strings")
    if tuple(tokens[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
        raise UserError(f"tokenizer file {path} is corrupt: 'tokens' must start with {list(SPECIAL_TOKENS)}")
    if len(set(tokens)) != len(tokens):
        raise UserError(f"tokenizer file {path} is corrupt: 'tokens' has duplicates")
    # Every learned token must be one symbol as the tokenizer splits text, or it is unreachable.
    bad = next((t for t in tokens[len(SPECIAL_TOKENS) :] if cls._split(t) != [t]), None)
    if bad is not None:
        raise UserError(f"tokenizer file {path} is corrupt: {bad!r} is not a valid {cls.kind} token")
    return tokens


# ----------------------------------------------------------------------------- helpers


def _json_bytes(obj: dict[str, Any]) -> bytes:
    # ASCII escapes keep odd strings (lone surrogates from undecodable input) writable.
    return (json.dumps(obj, ensure_ascii=True, indent=1) + "\n").encode("ascii")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
