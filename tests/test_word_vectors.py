"""Pretrained word vectors: reading the file, filling the embedding, growing a word vocabulary,
bad files, and what they are for (a word never seen in training is understood by its vector)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from rich.console import Console
from torch import nn

from seq2seq.config import config_from_dict
from seq2seq.errors import UserError
from seq2seq.run_directory import RunDirectory
from seq2seq.tasks.language_model import LanguageModelTask
from seq2seq.tokenizers import PAD_ID, train_tokenizer
from seq2seq.word_vectors import load_word_vectors, vector_words

from .cli_helpers import assert_user_error, run_cli
from .test_classification import dev_accuracy, tiny_raw, train, write_tsv

QUIET = Console(stderr=True, quiet=True)


def write_vectors(path: Path, vectors: dict[str, list[float]], header: bool = True) -> Path:
    size = len(next(iter(vectors.values())))
    lines = [f"{len(vectors)} {size}"] if header else []
    lines += [word + " " + " ".join(f"{x:.4f}" for x in v) for word, v in vectors.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_vocabulary_rows_take_their_vectors_and_the_rest_are_redrawn(tmp_path):
    tokenizer = train_tokenizer(["the cat sat", "the dog"], "word")
    path = write_vectors(tmp_path / "v.txt", {"dog": [1, 2, 3], "bird": [9, 9, 9], "the": [4, 5, 6],
                                              "cat": [7, 8, 9]})
    embedding = nn.Embedding(tokenizer.vocab_size, 3, padding_idx=PAD_ID)
    nn.init.constant_(embedding.weight, 100.0)

    assert load_word_vectors(embedding, tokenizer, path) == 3  # the, cat, dog; not sat, not bird
    weight = embedding.weight.detach()
    for word, vector in {"dog": [1, 2, 3], "the": [4, 5, 6], "cat": [7, 8, 9]}.items():
        assert weight[tokenizer.encode(word)[0]].tolist() == vector
    assert weight[PAD_ID].abs().sum() == 0
    redrawn = weight[tokenizer.encode("sat")[0]]
    assert redrawn.abs().max() < 100.0  # drawn again at the vectors' scale, not left as it was


def test_glove_format_without_header_and_a_lowercasing_tokenizer(tmp_path):
    tokenizer = train_tokenizer(["Good film"], "word", lowercase=True)
    path = write_vectors(tmp_path / "glove.txt", {"GOOD": [1.0, 0.0], "good": [0.0, 1.0],
                                                  "film": [0.5, 0.5]}, header=False)
    embedding = nn.Embedding(tokenizer.vocab_size, 2)
    assert load_word_vectors(embedding, tokenizer, path) == 2
    # the first line of a word wins, as in a frequency-ordered file
    assert embedding.weight[tokenizer.encode("good")[0]].tolist() == [1.0, 0.0]
    assert vector_words(path, 2) == ["GOOD", "good"]


def test_a_word_vocabulary_grows_with_the_vector_words_up_to_its_size():
    tokenizer = train_tokenizer(["b a a"], "word", vocab_size=7, extra_words=["a", "Z", "y", "x"])
    assert [tokenizer.id_to_token(i) for i in range(4, tokenizer.vocab_size)] == ["a", "b", "Z"]
    lowered = train_tokenizer(["b"], "word", lowercase=True, extra_words=["B", "Q"])
    assert [lowered.id_to_token(i) for i in range(4, lowered.vocab_size)] == ["b", "q"]


@pytest.mark.parametrize("content, message", [
    (b"3 2\nthe 1 2\ncat 1 2 3\n",
     r"v\.txt line 3: 3 numbers after the word, but model\.embedding_size is 2"),
    (b"the 1 two\n", r"v\.txt line 1: expected a word and 2 numbers"),
    (b"the 1 2\ncat \xff 2\n", r"v\.txt line 2: not UTF-8"),
    (b"dog 1 2\n", r"has a vector for none of the 2 words"),
])
def test_bad_vector_files_name_the_line_or_the_problem(tmp_path, content, message):
    (tmp_path / "v.txt").write_bytes(content)
    tokenizer = train_tokenizer(["the cat"], "word")
    with pytest.raises(UserError, match=message):
        load_word_vectors(nn.Embedding(tokenizer.vocab_size, 2), tokenizer, tmp_path / "v.txt")
    with pytest.raises(UserError, match="no such file"):
        load_word_vectors(nn.Embedding(tokenizer.vocab_size, 2), tokenizer, tmp_path / "none.txt")


@pytest.mark.parametrize("model, tokenizer, message", [
    ({"pretrained_embeddings": "v.txt", "init_from": "runs/lm"}, {}, "give one of them"),
    ({"freeze_embeddings": True}, {}, "needs model.pretrained_embeddings or model.init_from"),
    ({}, {"add_vector_words": True}, "needs tokenizer.kind: word and model.pretrained_embeddings"),
])
def test_config_rejects_conflicting_vector_options(tmp_path, model, tokenizer, message):
    raw = tiny_raw(tmp_path / "t.tsv", tmp_path / "d.tsv")
    raw["model"].update(model)
    raw["tokenizer"].update(tokenizer)
    with pytest.raises(UserError, match=message):
        config_from_dict(raw)


def synonym_rows(n: int, seed: int, positive: str, negative: str) -> list[tuple[str, str]]:
    """Filler words around one sentiment word; the label is that word's."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = rng.choices([f"w{i}" for i in range(10)], k=rng.randint(2, 6))
        label = rng.choice(["neg", "pos"])
        words.insert(rng.randint(0, len(words)), positive if label == "pos" else negative)
        rows.append((" ".join(words), label))
    return rows


def test_words_unseen_in_training_are_understood_through_their_vectors(tmp_path):
    """Trained on "good"/"bad" only, the classifier reads "great"/"awful" (never in its
    training data) right, because their vectors are those of "good"/"bad"; without the
    vectors they are unknown words and it can only guess."""
    rng = np.random.default_rng(0)
    size = 16
    sentiment = np.zeros(size)
    sentiment[0] = 3.0
    vectors = {f"w{i}": rng.normal(size=size).tolist() for i in range(10)}
    for word, sign in (("good", 1), ("great", 1), ("bad", -1), ("awful", -1)):
        vectors[word] = (sign * sentiment + rng.normal(scale=0.1, size=size)).tolist()
    path = write_vectors(tmp_path / "vectors.txt", vectors)
    train_file = write_tsv(tmp_path / "train.tsv", synonym_rows(600, 0, "good", "bad"))
    dev_file = write_tsv(tmp_path / "dev.tsv", synonym_rows(100, 1, "good", "bad"))
    synonyms = synonym_rows(200, 2, "great", "awful")

    accuracy = {}
    variants = (("vectors", {"pretrained_embeddings": str(path)}), ("scratch", {}),
                ("frozen", {"pretrained_embeddings": str(path), "freeze_embeddings": True}))
    for name, model in variants:
        raw = tiny_raw(train_file, dev_file, max_steps=150, validate_every=50)
        raw["model"].update(model)
        raw["tokenizer"]["add_vector_words"] = bool(model)
        task = train(raw, tmp_path / name)
        accuracy[name] = dev_accuracy(tmp_path / name, synonyms)
    assert accuracy["vectors"] >= 0.95 and accuracy["frozen"] >= 0.95
    assert accuracy["scratch"] <= 0.75
    # frozen: the trained model still holds the file's vectors
    embedding = task.model.embedding.weight.detach()
    for word in ("good", "awful", "w3"):
        assert np.allclose(embedding[task.tokenizer.encode(word)[0]].numpy(), vectors[word], atol=1e-4)


def test_cli_names_a_missing_vectors_file_and_leaves_no_run_behind(tmp_path):
    train_file = write_tsv(tmp_path / "train.tsv", synonym_rows(50, 0, "good", "bad"))
    raw = tiny_raw(train_file, train_file)
    raw["model"]["pretrained_embeddings"] = str(tmp_path / "missing.txt")
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(raw))
    assert_user_error(run_cli("train", config, "--run-dir", tmp_path / "run"),
                      "model.pretrained_embeddings: no such file", "missing.txt")
    assert not (tmp_path / "run").exists()


def test_a_language_model_starts_from_the_vectors_of_its_words(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("the cat sat on the mat\n" * 20, encoding="utf-8")
    vectors = {w: [float(i), 1.0, -1.0, 0.5] for i, w in enumerate(["the", "dog", "cat", "mat"])}
    raw = {"task": "language_model",
           "data": {"train": str(text), "lm_mode": "stream", "bptt": 8, "dev_fraction": 0.1},
           "tokenizer": {"kind": "word", "add_vector_words": True},
           "model": {"embedding_size": 4, "encoder": {"hidden_size": 8, "bidirectional": False},
                     "pretrained_embeddings": str(write_vectors(tmp_path / "v.txt", vectors))},
           "training": {"batch_size": 2}}
    config = config_from_dict(raw)
    run = RunDirectory(tmp_path / "run")
    run.path.mkdir()
    task = LanguageModelTask.setup(config, run, False, torch.device("cpu"), QUIET)
    tokenizer, weight = task.tokenizer, task.model.embedding.weight.detach()
    assert tokenizer.encode("dog") != [tokenizer.unk_id]  # taken from the vectors file
    for word, vector in vectors.items():
        assert weight[tokenizer.encode(word)[0]].tolist() == vector
