"""The classification head: tiny models really learn, padding is irrelevant, labels round-trip,
class weights weigh, resume is exact, language-model weights transfer, and the command line
(train -> classify -> evaluate) works on the embedded SST-2 sample and refuses bad input with
one line naming the file and line.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from rich.console import Console
from safetensors.torch import load_file, save_model
from torch import nn

from seq2seq import Classifier
from seq2seq.config import ModelConfig, config_from_dict, dump_config
from seq2seq.data.classification import truncate
from seq2seq.errors import UserError
from seq2seq.metrics.classification import classification_scores
from seq2seq.models.classification import ClassificationModel, classification_loss
from seq2seq.models.encoder import RecurrentEncoder
from seq2seq.run_directory import RunDirectory
from seq2seq.tasks.classification import ClassificationTask, balanced_weights
from seq2seq.tokenizers import EOS_ID, PAD_ID, train_tokenizer
from seq2seq.training.trainer import Trainer

from .cli_helpers import assert_user_error, run_cli

ROOT = Path(__file__).resolve().parents[1]
QUIET = Console(stderr=True, quiet=True)

FILLERS = [f"w{i}" for i in range(20)]


def sentiment_rows(n: int, seed: int, labels=("neg", "pos")) -> list[tuple[str, str]]:
    """Filler words around one sentiment word, sometimes negated: "w3 not good w7" is negative.

    The label depends on word order ("not" right before the sentiment word), so a bag of words
    cannot learn it.
    """
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = rng.choices(FILLERS, k=rng.randint(2, 8))
        positive, negated = rng.random() < 0.5, rng.random() < 0.5
        phrase = (["not"] if negated else []) + [
            rng.choice(["good", "great"] if positive else ["bad", "awful"])]
        at = rng.randint(0, len(words))
        words[at:at] = phrase
        rows.append((" ".join(words), labels[positive != negated]))
    return rows


def write_tsv(path: Path, rows, header=("text", "label")) -> Path:
    lines = ["\t".join(header)] + [f"{text}\t{label}" for text, label in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_jsonl(path: Path, rows, key: str = "text") -> Path:
    path.write_text("".join(json.dumps({key: t, "label": label}) + "\n" for t, label in rows),
                    encoding="utf-8")
    return path


def tiny_raw(train: Path, dev: Path, cell="gru", pooling="max", **training) -> dict:
    return {
        "task": "classification",
        "name": "tiny",
        "data": {"train": str(train), "dev": str(dev), "test": str(dev)},
        "tokenizer": {"kind": "word", "vocab_size": 50},
        "model": {"embedding_size": 16, "encoder": {"cell": cell, "hidden_size": 32},
                  "embedding_dropout": 0.0, "classifier": {"pooling": pooling, "dropout": 0.0}},
        "training": {"batch_size": 32, "learning_rate": 0.005, "max_steps": 500,
                     "validate_every": 100, "log_every": 50, **training},
    }


def synthetic_raw(tmp_path: Path, fmt="tsv", labels=("neg", "pos"), **kwargs) -> dict:
    write = write_tsv if fmt == "tsv" else write_jsonl
    train = write(tmp_path / f"train.{fmt}", sentiment_rows(2000, 0, labels))
    dev = write(tmp_path / f"dev.{fmt}", sentiment_rows(300, 1, labels))
    return tiny_raw(train, dev, **kwargs)


def train(raw: dict, run_path: Path, resume: bool = False) -> ClassificationTask:
    config = config_from_dict(raw)
    torch.manual_seed(config.training.seed)
    run = RunDirectory(run_path)
    run.path.mkdir(exist_ok=True)
    task = ClassificationTask.setup(config, run, resume, torch.device("cpu"), QUIET)
    if not resume:
        run.config_path.write_text(dump_config(config))
        run.write_run_info("classification", "test")
    trainer = Trainer(task, config.training, run, torch.device("cpu"), QUIET, show_progress=False)
    if resume:
        trainer.resume()
    trainer.train()
    return task


def dev_accuracy(run_path: Path, rows) -> float:
    classifier = Classifier.from_pretrained(run_path, device="cpu")
    found = classifier.predict([text for text, _ in rows])
    return sum(f.label == label for f, (_, label) in zip(found, rows)) / len(rows)


# --- learning -------------------------------------------------------------------------------


# Every cell and every pooling: "last" reads the final state, a pair for the LSTM and one
# tensor for the other cells (the plain RNN's as the GRU's), so it learns with both forms; the
# other poolings read the outputs, which every cell gives alike.
@pytest.mark.parametrize("cell, pooling", [("rnn", "last"), ("lstm", "last"), ("lstm", "mean"),
                                           ("gru", "max"), ("gru", "attention")])
def test_tiny_classifier_learns_negated_sentiment(tmp_path, cell, pooling):
    """>= 95 % on held-out texts, through the Python API.

    All twelve combinations of cell and pooling were at 100 % at least 50 steps before their
    last (seeds 42 and 7)."""
    raw = synthetic_raw(tmp_path, cell=cell, pooling=pooling,
                        max_steps=400 if cell == "rnn" else 250)
    train(raw, tmp_path / "run")
    accuracy = dev_accuracy(tmp_path / "run", sentiment_rows(300, 1))
    assert accuracy >= 0.95, f"{cell}/{pooling}: accuracy {accuracy:.3f}"


def test_int_labels_from_jsonl_round_trip_sorted_numerically(tmp_path):
    raw = synthetic_raw(tmp_path, fmt="jsonl", labels=(10, 2), max_steps=150)
    train(raw, tmp_path / "run")
    assert json.loads((tmp_path / "run/labels.json").read_text())["labels"] == ["2", "10"]
    classifier = Classifier.from_pretrained(tmp_path / "run", device="cpu")
    assert classifier.labels.names == ("2", "10")
    rows = sentiment_rows(300, 1, labels=("10", "2"))
    assert dev_accuracy(tmp_path / "run", rows) >= 0.95
    found = classifier.predict(["w1 not good w2", "great"], top_k=5)
    assert [f.label for f in found] == ["10", "2"]
    assert [len(f.top) for f in found] == [2, 2]  # top_k is capped at the number of labels
    for f in found:
        assert f.top[0] == (f.label, f.probability)
        assert f.top[0][1] >= f.top[1][1] and sum(p for _, p in f.top) == pytest.approx(1.0)


def test_string_labels_and_a_third_class(tmp_path):
    """Label names are data: sorted as text, kept exactly (spaces around them stripped)."""
    rows = sentiment_rows(600, 0, labels=("négatif", "positif"))
    rows += [(" ".join(random.Random(i).choices(FILLERS, k=4)), "sans avis ") for i in range(300)]
    raw = tiny_raw(write_tsv(tmp_path / "train.tsv", rows), write_tsv(tmp_path / "dev.tsv", rows[:50]),
                   max_steps=20)
    train(raw, tmp_path / "run")
    classifier = Classifier.from_pretrained(tmp_path / "run", device="cpu")
    assert classifier.labels.names == ("négatif", "positif", "sans avis")
    assert {f.label for f in classifier.predict([t for t, _ in rows[:50]])} <= set(
        classifier.labels.names)


def test_csv_gz_with_quotes_commas_and_newlines_loads_by_config(tmp_path):
    """IMDB's layout: id,rating,label,text with quoted texts; dev held out at random."""
    import csv
    import gzip

    rows = sentiment_rows(200, 0)
    with gzip.open(tmp_path / "train.csv.gz", "wt", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "rating", "label", "text"])
        for i, (text, label) in enumerate(rows):
            writer.writerow([i, 8, label, f'"{text}", she said,\nand <br />left'])
    raw = tiny_raw(tmp_path / "train.csv.gz", "", max_steps=1)
    raw["data"].update(dev_fraction=0.25, test="")
    task = train(raw, tmp_path / "run")
    assert len(task.train) == 150 and len(task.dev) == 50
    assert task.labels.names == ("neg", "pos")
    first = task.train.texts[0]
    assert first["text"].startswith('"') and "\nand <br />" in first["text"]
    # Rows keep their first line in the file (each record spans two lines here); the held-out
    # rows are spread over the file, not taken from its tail.
    train_lines, dev_lines = list(task.train.texts["line"]), list(task.dev.texts["line"])
    assert sorted(train_lines + dev_lines) == [2 + 2 * i for i in range(200)]
    assert min(dev_lines) < 100 < max(dev_lines)


def test_hub_dataset_with_int_labels(tmp_path, monkeypatch):
    import datasets

    rows = sentiment_rows(300, 0, labels=(0, 1))
    splits = {"train": rows, "validation": [*rows[:20], ("w1 good", 7)]}

    def fake_load_dataset(name, config, split, cache_dir=None):
        assert (name, config) == ("glue", "sst2")
        texts, labels = zip(*splits[split])
        return datasets.Dataset.from_dict({"sentence": list(texts), "label": list(labels)})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    raw = tiny_raw("train", "validation", max_steps=1)
    raw["data"].update(format="hub", hub_name="glue", hub_config="sst2", text="sentence", test="")
    with pytest.raises(UserError, match="hub dataset 'glue' split 'validation' row 21: label '7'"):
        train(raw, tmp_path / "run")
    splits["validation"] = rows[:20]
    task = train(raw, tmp_path / "run")
    assert task.labels.names == ("0", "1") and len(task.dev) == 20


# --- the model ------------------------------------------------------------------------------


@pytest.mark.parametrize("pooling", ["last", "mean", "max", "attention"])
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_padding_does_not_change_probabilities(cell, pooling):
    torch.manual_seed(0)
    config = ModelConfig(embedding_size=8)
    config.encoder.cell, config.encoder.hidden_size, config.encoder.layers = cell, 6, 2
    config.classifier.pooling, config.classifier.hidden_size = pooling, 5
    model = ClassificationModel(config, vocab_size=20, num_classes=3).eval()
    text = torch.tensor([[5, 9, 7, EOS_ID]])
    alone = torch.softmax(model(text, torch.tensor([4])), -1)
    padded = torch.cat([text, torch.full((1, 6), PAD_ID)], 1)
    # Padding with real-looking tokens too: the lengths alone must decide what is read.
    junk = torch.cat([text, torch.randint(4, 20, (1, 6))], 1)
    longer = torch.tensor([[6, 7, 8, 9, 10, 11, 12, 13, 14, EOS_ID]])
    batch = torch.cat([junk, longer, padded])
    together = torch.softmax(model(batch, torch.tensor([4, 10, 4])), -1)
    assert torch.allclose(together[0], alone[0], atol=1e-6)
    assert torch.allclose(together[2], alone[0], atol=1e-6)


def test_empty_text_is_classified_from_the_empty_sequence(tmp_path):
    raw = synthetic_raw(tmp_path, max_steps=5)
    train(raw, tmp_path / "run")
    classifier = Classifier.from_pretrained(tmp_path / "run", device="cpu")
    found = classifier.predict(["", "   ", "w1 good"])
    assert len(found) == 3 and found[0].probability == found[1].probability
    assert classifier.predict([]) == []


def test_truncation_keeps_head_tail_or_both():
    ids = list(range(10))
    assert truncate(ids, 4, "head") == [0, 1, 2, 3]
    assert truncate(ids, 4, "tail") == [6, 7, 8, 9]
    assert truncate(ids, 5, "head_tail") == [0, 1, 2, 8, 9]
    assert truncate(ids, 1, "head_tail") == [0]
    assert truncate(ids, 12, "tail") == ids


def test_long_texts_are_truncated_and_counted(tmp_path):
    rows = [(" ".join(["w1"] * n + ["good"]), "pos") for n in range(1, 30)]
    rows += [(" ".join(["w2"] * n + ["bad"]), "neg") for n in range(1, 30)]
    raw = tiny_raw(write_tsv(tmp_path / "train.tsv", rows), write_tsv(tmp_path / "dev.tsv", rows),
                   max_steps=2)
    raw["data"]["max_length"], raw["data"]["truncation"] = 11, "tail"
    task = train(raw, tmp_path / "run")
    assert task.train.truncated == 2 * 20  # 10 tokens + </s> fit; 30 - 10 texts per class are cut
    assert task.train.ids.lengths().max() == 10
    assert task.train.ids.row(len(rows) - 1)[-1] == task.tokenizer.encode("bad")[0]  # tail kept


def test_metrics_by_hand():
    gold = np.array([0, 0, 0, 1, 1, 2])
    predicted = np.array([0, 0, 1, 1, 0, 0])
    scores = classification_scores(gold, predicted, 3)
    assert scores.accuracy == pytest.approx(50.0)
    assert scores.confusion.tolist() == [[2, 1, 0], [1, 1, 0], [1, 0, 0]]
    assert scores.precision.tolist() == pytest.approx([50.0, 50.0, 0.0])
    assert scores.recall.tolist() == pytest.approx([100 * 2 / 3, 50.0, 0.0])
    f1_0 = 2 * 0.5 * (2 / 3) / (0.5 + 2 / 3) * 100
    assert scores.macro_f1 == pytest.approx((f1_0 + 50.0 + 0.0) / 3)
    # Classes that are neither gold nor predicted (2 and 3 here) do not count in macro-F1.
    assert classification_scores(gold[:5], predicted[:5], 4).macro_f1 == pytest.approx(
        (100 * 2 / 3 + 50.0) / 2)


def test_balanced_class_weights_change_the_loss_as_expected():
    labels = np.array([0, 0, 0, 1])
    weights = balanced_weights(labels, 2)
    assert weights.tolist() == pytest.approx([4 / 6, 2.0])
    assert float(weights[labels].mean()) == pytest.approx(1.0)  # mean weight per text is 1
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.0], [0.0, 1.0], [1.0, 0.0]])
    gold = torch.from_numpy(labels)
    plain, nll, count = classification_loss(logits, gold)
    weighted, weighted_nll, _ = classification_loss(logits, gold, torch.from_numpy(weights))
    per_text = torch.nn.functional.cross_entropy(logits, gold, reduction="none")
    assert count == 4 and torch.allclose(plain, per_text.sum()) and torch.allclose(nll, plain)
    assert torch.allclose(weighted, (per_text * torch.from_numpy(weights)[gold]).sum())
    assert torch.allclose(weighted_nll, nll)  # reported NLL stays unweighted
    # The rare class's text counts three times as much as a common one.
    rare, _, _ = classification_loss(logits[3:], gold[3:], torch.from_numpy(weights))
    common, _, _ = classification_loss(logits[:1], gold[:1], torch.from_numpy(weights))
    assert torch.allclose(rare / per_text[3], 3 * common / per_text[0])


def test_balanced_weights_in_training(tmp_path):
    rows = sentiment_rows(400, 0)
    rows = [r for r in rows if r[1] == "pos"][:40] + [r for r in rows if r[1] == "neg"]
    raw = tiny_raw(write_tsv(tmp_path / "train.tsv", rows), write_tsv(tmp_path / "dev.tsv", rows),
                   max_steps=1, class_weights="balanced")
    task = train(raw, tmp_path / "run")
    counts = np.bincount(task.train.labels)
    assert task.class_weights.tolist() == pytest.approx((len(rows) / (2 * counts)).tolist())


# --- resume and transfer --------------------------------------------------------------------


def test_resumed_run_continues_exactly(tmp_path):
    """Stop at step 20, resume to 40: weights and optimizer state equal an uninterrupted run's
    bit for bit (dropout draws random numbers, so the RNG must be restored too)."""
    raw = synthetic_raw(tmp_path, cell="lstm", pooling="attention", max_steps=40,
                        validate_every=20, scheduler="plateau", class_weights="balanced")
    raw["model"]["embedding_dropout"] = 0.3
    raw["model"]["classifier"].update(dropout=0.3, hidden_size=8)
    train(raw, tmp_path / "whole")
    raw["training"]["max_steps"] = 20
    train(raw, tmp_path / "split")
    raw["training"]["max_steps"] = 40
    train(raw, tmp_path / "split", resume=True)
    step = "checkpoints/step_00000040"
    whole = load_file(str(tmp_path / "whole" / step / "model.safetensors"))
    split = load_file(str(tmp_path / "split" / step / "model.safetensors"))
    assert whole.keys() == split.keys()
    for name in whole:
        assert torch.equal(whole[name], split[name]), name
    state_whole = torch.load(tmp_path / "whole" / step / "state.pt", weights_only=True)
    state_split = torch.load(tmp_path / "split" / step / "state.pt", weights_only=True)
    for a, b in zip(state_whole["optimizer"]["state"].values(),
                    state_split["optimizer"]["state"].values()):
        assert torch.equal(a["exp_avg"], b["exp_avg"]) and torch.equal(a["exp_avg_sq"], b["exp_avg_sq"])
    assert torch.equal(state_whole["rng"], state_split["rng"])


class _LanguageModelShape(nn.Module):
    """What a language-model run stores: embedding, a left-to-right encoder, a tied output."""

    def __init__(self, vocab_size: int, size: int, layers: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, size, padding_idx=PAD_ID)
        self.encoder = RecurrentEncoder("lstm", size, size, layers, bidirectional=False)
        # Sorts before "embedding": safetensors keeps this name for the tied tensor and records
        # embedding.weight as an alias in the file's metadata.
        self.a_output = nn.Linear(size, vocab_size)
        self.a_output.weight = self.embedding.weight


def make_language_model_run(path: Path, texts: list[str], size: int = 16, layers: int = 2,
                            task: str = "language_model") -> nn.Module:
    path.mkdir(parents=True)
    (path / "run.json").write_text(json.dumps({"format_version": 1, "task": task}))
    raw = {"task": "language_model", "model": {"encoder": {"bidirectional": False}}}
    (path / "config.yaml").write_text(dump_config(config_from_dict(raw)))
    tokenizer = train_tokenizer(texts, "word", vocab_size=50)
    tokenizer.save(path, "text")
    torch.manual_seed(123)
    model = _LanguageModelShape(tokenizer.vocab_size, size, layers)
    save_model(model, str(path / "model.safetensors"))
    return model


def test_init_from_copies_language_model_weights_and_tokenizer(tmp_path):
    raw = synthetic_raw(tmp_path, cell="lstm", max_steps=1)
    lm = make_language_model_run(tmp_path / "lm", [t for t, _ in sentiment_rows(500, 5)])
    assert "embedding.weight" not in load_file(str(tmp_path / "lm/model.safetensors"))
    raw["model"].update(init_from=str(tmp_path / "lm"), embedding_size=16)
    raw["model"]["encoder"].update(hidden_size=16, layers=2, bidirectional=True)
    config = config_from_dict(raw)
    run = RunDirectory(tmp_path / "run")
    run.path.mkdir()
    torch.manual_seed(0)
    messages = Console(stderr=True, record=True, width=200)
    task = ClassificationTask.setup(config, run, False, torch.device("cpu"), messages)
    # The language model's tokenizer is reused, not retrained on the classification data.
    assert (run.path / "text.json").read_bytes() == (tmp_path / "lm/text.json").read_bytes()
    ours, theirs = task.model.state_dict(), lm.state_dict()
    for name in ["embedding.weight", "encoder.rnn.weight_ih_l0", "encoder.rnn.weight_hh_l0",
                 "encoder.rnn.bias_ih_l0", "encoder.rnn.weight_hh_l1", "encoder.rnn.bias_hh_l1"]:
        assert torch.equal(ours[name], theirs[name]), name
    # The backward direction has no counterpart; the second layer reads both directions.
    assert not torch.equal(ours["encoder.rnn.weight_hh_l0_reverse"], theirs["encoder.rnn.weight_hh_l0"])
    assert ours["encoder.rnn.weight_ih_l1"].shape != theirs["encoder.rnn.weight_ih_l1"].shape
    assert "copied 8 of 17 embedding and encoder tensors" in messages.export_text()


def test_init_from_a_classifier_copies_every_direction_but_not_the_head(tmp_path):
    raw = synthetic_raw(tmp_path, cell="lstm", max_steps=1)
    raw["model"].update(embedding_size=16)
    raw["model"]["encoder"].update(hidden_size=16, layers=2, bidirectional=True)
    source = tmp_path / "source"
    lm = make_language_model_run(source, [t for t, _ in sentiment_rows(500, 5)],
                                 task="classification")
    torch.manual_seed(5)
    classifier = ClassificationModel(config_from_dict(raw).model, lm.embedding.num_embeddings, 3)
    save_model(classifier, str(source / "model.safetensors"))
    raw["model"]["init_from"] = str(source)
    run = RunDirectory(tmp_path / "run")
    run.path.mkdir()
    messages = Console(stderr=True, record=True, width=200)
    task = ClassificationTask.setup(config_from_dict(raw), run, False, torch.device("cpu"), messages)
    ours, theirs = task.model.state_dict(), classifier.state_dict()
    encoder = [n for n in theirs if n.startswith(("embedding.", "encoder.rnn."))]
    head = [n for n in theirs if n not in encoder and theirs[n].dim() > 1]
    assert len(encoder) == 17 and head
    for name in encoder:
        assert torch.equal(ours[name], theirs[name]), name
    for name in head:  # the task's own layers start fresh
        assert ours[name].shape != theirs[name].shape or not torch.equal(ours[name], theirs[name])
    assert "copied 17 of 17 embedding and encoder tensors from the classification run" in (
        messages.export_text())


@pytest.mark.parametrize("change,words", [
    ({"embedding_size": 8}, ["model.init_from", "embedding.weight", ", 8)", "embedding_size"]),
    ({"encoder": {"hidden_size": 8}}, ["model.init_from", "encoder.rnn.weight_ih_l0"]),
    ({"encoder": {"cell": "gru"}}, ["model.init_from", "encoder.rnn.weight_ih_l0", "cell"]),
])
def test_init_from_refuses_weights_that_do_not_fit(tmp_path, change, words):
    raw = synthetic_raw(tmp_path, max_steps=1)
    make_language_model_run(tmp_path / "lm", [t for t, _ in sentiment_rows(500, 5)])
    raw["model"].update(init_from=str(tmp_path / "lm"), embedding_size=16)
    raw["model"]["encoder"].update(cell="lstm", hidden_size=16)
    for key, value in change.items():
        if isinstance(value, dict):
            raw["model"][key].update(value)
        else:
            raw["model"][key] = value
    run = RunDirectory(tmp_path / "run")
    run.path.mkdir()
    with pytest.raises(UserError) as err:
        ClassificationTask.setup(config_from_dict(raw), run, False, torch.device("cpu"), QUIET)
    assert "\n" not in str(err.value)
    for word in words:
        assert word in str(err.value)


# --- the command line -----------------------------------------------------------------------


SST2_SMALL = ["--set", "model.embedding_size=16", "--set", "model.encoder.hidden_size=16",
              "--set", "tokenizer.kind=word", "--set", "tokenizer.min_freq=3",
              "--set", "training.max_steps=40", "--set", "training.validate_every=20",
              "--set", "training.batch_size=64", "-q"]


def test_cli_train_classify_evaluate_on_embedded_sst2(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    run = tmp_path / "run"
    result = run_cli("train", "configs/demo_sst2.yaml", "--run-dir", run, *SST2_SMALL)
    assert result.exit_code == 0, result.output
    assert "10,000 training texts" in result.output and "872 dev texts" in result.output
    assert (run / "labels.json").is_file() and (run / "model.safetensors").is_file()
    assert json.loads((run / "run.json").read_text())["task"] == "classification"

    texts = ["a gorgeous , witty , seductive movie .", "", "dull , boring and far too long ."]
    result = run_cli("classify", run, *texts)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 3
    for line in lines:
        label, probability = line.split("\t")
        assert label in ("0", "1") and 0.5 <= float(probability) <= 1.0
    result = run_cli("classify", run, "--format", "jsonl", "--top-k", "2", input="\n".join(texts))
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["text"] for r in rows] == texts
    assert all(len(r["top"]) == 2 and r["top"][0]["label"] == r["label"] for r in rows)
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n")
    result = run_cli("classify", run, "--input", tmp_path / "in.txt", "--output",
                     tmp_path / "out.tsv", "--top-k", "2")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out.tsv").read_text().splitlines()[0].count("\t") == 3

    result = run_cli("evaluate", run)  # the config's test split: data/sst2/dev.tsv
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "eval/test/metrics.json").read_text())
    assert list(metrics) == ["task", "data", "texts", "accuracy", "macro_f1", "labels",
                             "per_class", "confusion_matrix", "skipped", "truncated", "seconds"]
    assert metrics["texts"] == 872 and sum(map(sum, metrics["confusion_matrix"])) == 872
    assert f"accuracy {metrics['accuracy']:.2f}" in result.stdout
    assert metrics["per_class"]["0"]["support"] == 428
    # each figure once: plain lines for a pipe, no tables beside them
    assert result.output.count("support 428") == 1 and "per class (%)" not in result.output
    # The same through the Python API: one inference path.
    classifier = Classifier.from_pretrained(run, device="cpu")
    dev = [line.split("\t") for line in (ROOT / "data/sst2/dev.tsv").read_text().splitlines()[1:]]
    found = classifier.predict([t for t, _ in dev], batch_size=7)
    accuracy = 100 * sum(f.label == label for f, (_, label) in zip(found, dev)) / len(dev)
    assert accuracy == pytest.approx(metrics["accuracy"], abs=1e-3)

    subset = tmp_path / "subset.jsonl"
    write_jsonl(subset, [(t, int(label)) for t, label in dev[:50]], key="sentence")
    result = run_cli("evaluate", run, "--data", subset, "--output-dir", tmp_path / "ev")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "ev/metrics.json").read_text())["texts"] == 50


def write_config(tmp_path: Path, train_rows=None, dev_rows=None, fmt="tsv", **data) -> Path:
    write = write_tsv if fmt == "tsv" else write_jsonl
    train_path = tmp_path / f"train.{fmt}"
    dev_path = tmp_path / f"dev.{fmt}"
    write(train_path, train_rows if train_rows is not None else sentiment_rows(100, 0))
    write(dev_path, dev_rows if dev_rows is not None else sentiment_rows(20, 1))
    raw = tiny_raw(train_path, dev_path, max_steps=2, validate_every=2)
    raw["data"].update(data)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def assert_train_refused(tmp_path: Path, config: Path, *words: str) -> str:
    run = tmp_path / "run"
    line = assert_user_error(run_cli("train", config, "--run-dir", run, "-q"), *words)
    assert not run.exists(), "a refused run must leave no run directory behind"
    return line


GOOD = sentiment_rows(30, 0)


@pytest.mark.parametrize("rows,fmt,words", [
    ([*GOOD[:3], ("w1 good", "")], "tsv", ["train.tsv line 5", "no label", "bad_rows"]),
    ([*GOOD[:3], ("w1 good", "  ")], "tsv", ["train.tsv line 5", "no label"]),
    ([*GOOD[:4], ("", "pos")], "tsv", ["train.tsv line 6", "empty text"]),
    ([*GOOD[:4], (" ", "pos")], "tsv", ["train.tsv line 6", "empty text"]),
    ([*GOOD[:2], ("w1 good", None)], "jsonl", ["train.jsonl line 3", "no label"]),
])
def test_bad_training_rows_name_file_and_line(tmp_path, rows, fmt, words):
    assert_train_refused(tmp_path, write_config(tmp_path, [*rows, *GOOD], fmt=fmt), *words)


def test_tsv_row_without_label_column_and_jsonl_without_key(tmp_path):
    config = write_config(tmp_path)
    with open(tmp_path / "train.tsv", "a") as handle:
        handle.write("a text without a tab\n")
    assert_train_refused(tmp_path, config, "train.tsv line 102", "no label")
    config = write_config(tmp_path, fmt="jsonl")
    with open(tmp_path / "train.jsonl", "a") as handle:
        handle.write('{"text": "w2 bad"}\n')
    assert_train_refused(tmp_path, config, "train.jsonl line 101", "no label")


def test_bad_rows_skip_counts_them(tmp_path):
    rows = [*GOOD[:3], ("w1 good", ""), ("", "pos"), *sentiment_rows(100, 0)]
    config = write_config(tmp_path, rows, dev_rows=[*sentiment_rows(20, 1), (" ", "neg")],
                          bad_rows="skip")
    with open(tmp_path / "train.tsv", "a") as handle:
        handle.write("no tab at all\n")
    result = run_cli("train", config, "--run-dir", tmp_path / "run", "-q")
    assert result.exit_code == 0, result.output
    assert "103 training texts" in result.output
    assert "4 rows without text or label skipped" in result.output


def test_unseen_dev_label_names_file_line_and_label(tmp_path):
    dev = [*sentiment_rows(5, 1), ("w3 good", "maybe")]
    line = assert_train_refused(tmp_path, write_config(tmp_path, dev_rows=dev),
                                "dev.tsv line 7", "'maybe'", "neg, pos")
    assert "train.tsv" in line


def test_one_label_only_is_refused(tmp_path):
    rows = [(t, "pos") for t, _ in GOOD]
    assert_train_refused(tmp_path, write_config(tmp_path, rows, dev_rows=rows), "only one label")


def test_missing_label_column_and_unreadable_files(tmp_path):
    assert_train_refused(tmp_path, write_config(tmp_path, label="sentiment"),
                         "train.tsv", "no column 'sentiment'")
    config = write_config(tmp_path)
    (tmp_path / "train.tsv").write_bytes(b"text\tlabel\nw1 good\tpos\nw2 \xff bad\tneg\n")
    assert_train_refused(tmp_path, config, "train.tsv line 3", "UTF-8")
    (tmp_path / "dev.tsv").unlink()
    write_tsv(tmp_path / "train.tsv", GOOD)
    assert_train_refused(tmp_path, config, "data file not found", "dev.tsv")
    gz = tmp_path / "train.csv.gz"
    gz.write_bytes(b"\x1f\x8b\x08\x00not really gzip")
    config = write_config(tmp_path, train=str(gz))
    assert_train_refused(tmp_path, config, "train.csv.gz", "gzip")


def test_no_dev_file_needs_dev_fraction(tmp_path):
    config = write_config(tmp_path, dev="")
    assert_train_refused(tmp_path, config, "data.dev", "dev_fraction")
    config = write_config(tmp_path, dev="", dev_fraction=0.2)
    result = run_cli("train", config, "--run-dir", tmp_path / "run", "-q")
    assert result.exit_code == 0, result.output
    assert "80 training texts" in result.output and "20 dev texts" in result.output


def test_init_from_a_run_that_is_not_a_language_model(tmp_path):
    make_language_model_run(tmp_path / "lm", [t for t, _ in GOOD], task="translation")
    config = write_config(tmp_path)
    raw = yaml.safe_load(config.read_text())
    raw["model"]["init_from"] = str(tmp_path / "lm")
    config.write_text(yaml.safe_dump(raw))
    assert_train_refused(tmp_path, config, "model.init_from", "translation run",
                         "not a language model's or a classifier's")
    raw["model"]["init_from"] = str(tmp_path / "nowhere")
    config.write_text(yaml.safe_dump(raw))
    assert_train_refused(tmp_path, config, "run directory not found", "nowhere")


def test_classify_and_evaluate_refuse_bad_input(tmp_path):
    config = write_config(tmp_path)
    run = tmp_path / "run"
    assert run_cli("train", config, "--run-dir", run, "-q").exit_code == 0
    assert_user_error(run_cli("classify", run, "--format", "xml", "x"), "--format", "tsv, jsonl")
    assert_user_error(run_cli("classify", run, "--top-k", "0", "x"), "--top-k", ">= 1")
    assert_user_error(run_cli("evaluate", run, "--beam-size", "5"), "--beam-size",
                      "for translation runs")
    checkpoint = next((run / "checkpoints").iterdir())
    assert_user_error(run_cli("classify", run, "--checkpoint", checkpoint, "x"),
                      "checkpoint folder", "model.safetensors")
    assert_user_error(run_cli("classify", tmp_path / "nope", "x"), "run directory not found")
    assert_user_error(run_cli("classify", run, "--input", tmp_path / "none.txt"), "none.txt")
    (tmp_path / "reviews.txt").write_text("w1 good\n")
    assert_user_error(run_cli("evaluate", run, "--data", tmp_path / "reviews.txt"),
                      "reviews.txt", "plain text file has no labels")
    (tmp_path / "header.tsv").write_text("text\tlabel\n")
    assert_user_error(run_cli("evaluate", run, "--data", tmp_path / "header.tsv"), "header.tsv",
                      "no rows")
    (tmp_path / "texts.txt").write_text("w1 good\n")
    assert_user_error(run_cli("classify", run, "--input", tmp_path / "texts.txt", "--output",
                              tmp_path / "texts.txt"), "is the --input file")
    assert (tmp_path / "texts.txt").read_text() == "w1 good\n"
    assert_user_error(run_cli("classify", run, "--checkpoint", tmp_path / "w.safetensors", "x"),
                      "w.safetensors")
    unseen = write_tsv(tmp_path / "test.tsv", [*GOOD[:3], ("w1 good", "[meh]")])
    assert_user_error(run_cli("evaluate", run, "--data", unseen), "test.tsv line 5", "'[meh]'",
                      "labels.json")
    assert_user_error(run_cli("evaluate", run, "--data", tmp_path / "gone.tsv"),
                      "data file not found")
    assert_user_error(run_cli("evaluate", run, "--src", unseen, "--ref", unseen), "--data")
    (run / "labels.json").write_text("{}")
    assert_user_error(run_cli("classify", run, "x"), "labels.json")
