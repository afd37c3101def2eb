"""Tests for seq2seq.tokenizers: every kind behind the same interface."""

from __future__ import annotations

import json
import random

import pytest

from seq2seq import tokenizers
from seq2seq.errors import UserError
from seq2seq.tokenizers import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    SPECIAL_TOKENS,
    UNK_ID,
    Tokenizer,
    load_tokenizer,
    train_tokenizer,
)

WORDS = (
    "the cat sat on a mat and the dog ran to the big red house near Straße "
    "¿Dónde está? el niño come pan café très bien naïve Ärger Zoë 42 7"
).split()


def make_corpus(n: int = 300, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 10))) for _ in range(n)]


CORPUS = make_corpus()
SAMPLE = "¿Dónde está? el niño come café the cat sat near Straße"

# (kind, extra training arguments); a moderate sentencepiece vocab keeps training fast.
VARIANTS = {
    "spm-unigram": ("sentencepiece", {"model_type": "unigram", "vocab_size": 80}),
    "spm-bpe": ("sentencepiece", {"model_type": "bpe", "vocab_size": 80}),
    "char": ("char", {}),
    "word": ("word", {}),
}


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def trained(request) -> tuple[str, Tokenizer]:
    kind, kwargs = VARIANTS[request.param]
    return request.param, train_tokenizer(CORPUS, kind, **kwargs)


def test_kind_and_specials(trained):
    variant, tok = trained
    assert tok.kind == VARIANTS[variant][0]
    assert (PAD_ID, UNK_ID, BOS_ID, EOS_ID) == (0, 1, 2, 3)
    assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id) == (0, 1, 2, 3)
    assert [tok.id_to_token(i) for i in range(4)] == list(SPECIAL_TOKENS)
    assert tok.vocab_size > len(SPECIAL_TOKENS)


def test_round_trip(trained):
    _, tok = trained
    for text in [SAMPLE, *CORPUS[:50]]:
        ids = tok.encode(text)
        assert UNK_ID not in ids and BOS_ID not in ids and EOS_ID not in ids
        assert all(0 <= i < tok.vocab_size for i in ids)
        assert tok.decode(ids) == text
    assert tok.decode([]) == ""


def test_word_round_trip_normalises_whitespace():
    tok = train_tokenizer(CORPUS, "word")
    assert tok.decode(tok.encode("  the   cat\tsat\n")) == "the cat sat"


def test_char_keeps_whitespace_and_newlines():
    tok = train_tokenizer(["ab c\nd"], "char")
    assert tok.decode(tok.encode("a b\nc d")) == "a b\nc d"
    assert tok.tokenize("ab\n") == ["a", "b", "\n"]


def test_decode_skips_pad_bos_eos_but_not_beyond_eos(trained):
    _, tok = trained
    ids = tok.encode("the cat")
    assert tok.decode([BOS_ID, *ids, EOS_ID, PAD_ID, PAD_ID]) == "the cat"
    # Decoding does not stop at EOS.
    assert tok.decode([*ids, EOS_ID, *ids]) == tok.decode(ids + ids)


def test_decode_rejects_out_of_range_ids(trained):
    _, tok = trained
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([tok.vocab_size])


@pytest.mark.parametrize("batched_from", [1, 10_000])  # sentencepiece: one C++ call, or each
def test_encode_batch_matches_encode(trained, batched_from, monkeypatch):
    monkeypatch.setattr(tokenizers, "BATCH_ENCODE_MIN", batched_from)
    _, tok = trained
    texts = [SAMPLE, "", *CORPUS[:20]]
    assert tok.encode_batch(texts) == [tok.encode(t) for t in texts]


def test_tokenize_pieces(trained):
    variant, tok = trained
    pieces = tok.tokenize("the cat")
    assert pieces
    if variant == "word":
        assert pieces == ["the", "cat"]
    elif variant == "char":
        assert pieces == list("the cat")
    else:
        assert "".join(pieces).replace("\u2581", " ").strip() == "the cat"


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_unknown_symbols(variant):
    kind, kwargs = VARIANTS[variant]
    tok = train_tokenizer(CORPUS, kind, **kwargs)
    assert tok.count_unknown(SAMPLE) == 0
    if kind == "word":
        assert tok.encode("the zebra cat") == [tok.encode("the")[0], UNK_ID, tok.encode("cat")[0]]
        assert tok.count_unknown("the zebra cat quokka") == 2
    else:
        # "日" and "本" are never seen in training: 2 unknown characters, even if adjacent.
        ids = tok.encode("the 日本 cat")
        assert UNK_ID in ids
        assert tok.count_unknown("the 日本 cat") == 2
        assert tok.count_unknown("日 the 本") == 2
    # Literal special-token text is not a control id.
    assert BOS_ID not in tok.encode("<s>") and PAD_ID not in tok.encode("<pad>")


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_save_load_identical(tmp_path, variant):
    kind, kwargs = VARIANTS[variant]
    tok = train_tokenizer(CORPUS, kind, lowercase=True, **kwargs)
    paths = tok.save(tmp_path / "sub", "src")
    assert all(p.exists() and p.parent == tmp_path / "sub" and p.stem == "src" for p in paths)
    assert not [p for p in (tmp_path / "sub").iterdir() if p not in paths], "temp files left behind"
    loaded = load_tokenizer(tmp_path / "sub", "src")
    assert type(loaded) is type(tok) and loaded.kind == kind and loaded.lowercase
    assert loaded.vocab_size == tok.vocab_size
    assert [loaded.id_to_token(i) for i in range(loaded.vocab_size)] == [
        tok.id_to_token(i) for i in range(tok.vocab_size)
    ]
    texts = [SAMPLE.upper(), "the 日本 cat", *CORPUS[:30]]
    assert loaded.encode_batch(texts) == tok.encode_batch(texts)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_deterministic(variant):
    kind, kwargs = VARIANTS[variant]
    # max_sentences below the corpus size exercises the seeded sampling path too.
    a = train_tokenizer(CORPUS, kind, max_sentences=150, seed=3, **kwargs)
    b = train_tokenizer(iter(CORPUS), kind, max_sentences=150, seed=3, **kwargs)
    assert a.vocab_size == b.vocab_size
    assert a.encode_batch(CORPUS[:50]) == b.encode_batch(CORPUS[:50])
    assert [a.id_to_token(i) for i in range(a.vocab_size)] == [b.id_to_token(i) for i in range(b.vocab_size)]


def test_sentencepiece_small_corpus_with_large_vocab():
    tok = train_tokenizer(CORPUS[:40], "sentencepiece", vocab_size=8000)
    assert 4 < tok.vocab_size < 8000
    assert tok.decode(tok.encode(CORPUS[0])) == CORPUS[0]


def test_word_vocab_cap_and_min_freq():
    texts = ["a a a a b b b c c d", "e e"]
    tok = train_tokenizer(texts, "word", vocab_size=7)
    assert [tok.id_to_token(i) for i in range(tok.vocab_size)] == [*SPECIAL_TOKENS, "a", "b", "c"]
    # Ties (c, e both twice) are broken by the word itself.
    tok = train_tokenizer(texts, "word", min_freq=2)
    assert [tok.id_to_token(i) for i in range(4, tok.vocab_size)] == ["a", "b", "c", "e"]
    assert tok.encode("d a") == [UNK_ID, 4]


def test_char_vocab_order_and_min_freq():
    tok = train_tokenizer(["bba", "cab"], "char", min_freq=2)
    assert [tok.id_to_token(i) for i in range(4, tok.vocab_size)] == ["b", "a"]


def test_lowercase():
    for kind, kwargs in VARIANTS.values():
        tok = train_tokenizer(CORPUS, kind, lowercase=True, **kwargs)
        assert tok.encode("The CAT Straße") == tok.encode("the cat straße")
        assert tok.count_unknown("THE CAT") == 0
        assert tok.decode(tok.encode("The CAT")) == "the cat"
    plain = train_tokenizer(["the cat"], "word")
    assert plain.encode("The") == [UNK_ID]


@pytest.mark.parametrize(
    "kind, kwargs, fragment",
    [
        ("bytes", {}, "'bytes'"),
        ("sentencepiece", {"model_type": "wordpiece"}, "'wordpiece'"),
        ("word", {"vocab_size": 4}, "vocab_size 4"),
        ("char", {"min_freq": 0}, "min_freq 0"),
        ("sentencepiece", {"character_coverage": 1.5}, "character_coverage 1.5"),
    ],
)
def test_bad_arguments(kind, kwargs, fragment):
    with pytest.raises(UserError) as info:
        train_tokenizer(CORPUS, kind, **kwargs)
    message = str(info.value)
    assert fragment in message and "\n" not in message
    if kind == "bytes":
        assert "sentencepiece, char, word" in message
    if "model_type" in kwargs:
        assert "unigram, bpe" in message


@pytest.mark.parametrize("kind", ["sentencepiece", "char", "word"])
def test_empty_training_texts(kind):
    for texts in ([], ["", "   "] if kind != "char" else [""]):
        with pytest.raises(UserError, match="empty"):
            train_tokenizer(texts, kind)


def test_word_min_freq_removing_everything():
    with pytest.raises(UserError, match="min_freq=5"):
        train_tokenizer(["a b c"], "word", min_freq=5)


def test_load_missing(tmp_path):
    with pytest.raises(UserError, match=r"no tokenizer 'src'.*src\.json or src\.model"):
        load_tokenizer(tmp_path, "src")


def test_load_missing_sentencepiece_model(tmp_path):
    tok = train_tokenizer(CORPUS, "sentencepiece", vocab_size=60)
    tok.save(tmp_path, "src")
    (tmp_path / "src.model").unlink()
    with pytest.raises(UserError, match=r"src\.model"):
        load_tokenizer(tmp_path, "src")


def test_load_sentencepiece_without_sidecar(tmp_path):
    tok = train_tokenizer(CORPUS, "sentencepiece", vocab_size=60)
    tok.save(tmp_path, "src")
    (tmp_path / "src.json").unlink()
    loaded = load_tokenizer(tmp_path, "src")
    assert loaded.kind == "sentencepiece" and not loaded.lowercase
    assert loaded.encode(SAMPLE) == tok.encode(SAMPLE)


def test_load_corrupt_sentencepiece_model(tmp_path):
    train_tokenizer(CORPUS, "sentencepiece", vocab_size=60).save(tmp_path, "src")
    (tmp_path / "src.model").write_bytes(b"\x00garbage\xff" * 10)
    with pytest.raises(UserError, match=r"src\.model"):
        load_tokenizer(tmp_path, "src")


def _good_meta() -> dict:
    return {"kind": "char", "format_version": 1, "lowercase": False, "tokens": [*SPECIAL_TOKENS, "a", "b"]}


@pytest.mark.parametrize(
    "content, fragment",
    [
        (b"{not json", "invalid JSON"),
        (b"\xff\xfe\x00", "not UTF-8"),
        (b"[1, 2]", "JSON object"),
        (json.dumps({**_good_meta(), "format_version": 2}).encode(), "format_version 2"),
        (json.dumps({**_good_meta(), "kind": "bytes"}).encode(), "unknown kind 'bytes'"),
        (json.dumps({**_good_meta(), "lowercase": "no"}).encode(), "lowercase"),
        (json.dumps({**_good_meta(), "tokens": "ab"}).encode(), "list of strings"),
        (json.dumps({**_good_meta(), "tokens": ["a", "b"]}).encode(), "must start with"),
        (json.dumps({**_good_meta(), "tokens": [*SPECIAL_TOKENS, "a", "a"]}).encode(), "duplicates"),
        (json.dumps({**_good_meta(), "tokens": [*SPECIAL_TOKENS, "ab"]}).encode(), "'ab'"),
    ],
)
def test_load_corrupt_json(tmp_path, content, fragment):
    path = tmp_path / "vocab.json"
    path.write_bytes(content)
    with pytest.raises(UserError) as info:
        load_tokenizer(tmp_path, "vocab")
    message = str(info.value)
    assert str(path) in message and fragment in message and "\n" not in message


def test_load_good_handwritten_json(tmp_path):
    (tmp_path / "v.json").write_text(json.dumps(_good_meta()))
    tok = load_tokenizer(tmp_path, "v")
    assert tok.kind == "char" and tok.encode("abc") == [4, 5, UNK_ID]
