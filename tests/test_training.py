"""Training really learns, checkpoints round-trip, and resumed runs continue exactly."""

import os
import random
from pathlib import Path

import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file

from seq2seq.config import config_from_dict
from seq2seq.run_directory import RunDirectory, load_weights
from seq2seq.runtime import mixed_precision
from seq2seq.tasks.translation import TranslationTask
from seq2seq.training.optim import LearningRateSchedule
from seq2seq.training.trainer import Trainer
from seq2seq.translator import Translator

QUIET = Console(stderr=True, quiet=True)


def write_reversal(path: Path, n: int, max_len: int, seed: int) -> None:
    """Digit strings and their reversals, as a TSV with a header."""
    rng = random.Random(seed)
    lines = ["src\ttrg"]
    for _ in range(n):
        digits = [rng.choice("0123456789") for _ in range(rng.randint(1, max_len))]
        lines.append(f"{' '.join(digits)}\t{' '.join(reversed(digits))}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def reversal_config(tmp_path: Path, max_len: int, **training) -> dict:
    write_reversal(tmp_path / "train.tsv", 5000, max_len, seed=0)
    write_reversal(tmp_path / "dev.tsv", 200, max_len, seed=1)
    return {
        "task": "translation",
        "data": {"train": str(tmp_path / "train.tsv"), "dev": str(tmp_path / "dev.tsv")},
        "tokenizer": {"kind": "word", "vocab_size": 20},
        "model": {"embedding_size": 32, "encoder": {"hidden_size": 64},
                  "decoder": {"hidden_size": 128}, "embedding_dropout": 0.0,
                  "output_dropout": 0.0},
        "training": {"batch_size": 64, "log_every": 50, "early_stopping_metric": "bleu",
                     **training},
        "decoding": {"beam_size": 1},
    }


def train(raw: dict, run_path: Path, resume: bool = False) -> TranslationTask:
    config = config_from_dict(raw)
    torch.manual_seed(config.training.seed)
    run = RunDirectory(run_path)
    run.path.mkdir(exist_ok=True)
    task = TranslationTask.setup(config, run, resume, torch.device("cpu"), QUIET)
    if not resume:
        run.config_path.write_text(__import__("seq2seq.config").config.dump_config(config))
        run.write_run_info("translation", "test")
    trainer = Trainer(task, config.training, run, torch.device("cpu"), QUIET, show_progress=False)
    if resume:
        trainer.resume()
    trainer.train()
    return task


# With attention, 7-digit strings are reversed within 200 steps (the learning rate decays at each
# validation, so the last ones settle); without, the whole string must pass through one state
# (5 digits here): the plain RNN learns that within 300 steps, the LSTM takes longer (exact
# match 1.00 and 0.96 with seed 42, 0.995 and 0.97 with seed 1). Every cell learns with
# attention; without it, the LSTM (whose state is a pair) and the plain RNN (whose single
# state the GRU shares, through the same bridge) must learn too.
STEPS_WITHOUT_ATTENTION = {"rnn": 300, "lstm": 560}


@pytest.mark.parametrize("cell,attention,attentional_output",
                         [(cell, "bahdanau", "linear") for cell in ("gru", "lstm", "rnn")]
                         + [(cell, "none", "linear") for cell in STEPS_WITHOUT_ATTENTION]
                         + [("gru", "bahdanau", "tanh"), ("lstm", "luong", "tanh")])
def test_tiny_model_learns_to_reverse(tmp_path, cell, attention, attentional_output):
    """Exact-match accuracy >= 95 % on held-out digit strings, through the public API."""
    with_attention = attention != "none"
    if with_attention:
        raw = reversal_config(tmp_path, max_len=7, max_steps=200, validate_every=50,
                              learning_rate=0.006, scheduler="exponential", decay_factor=0.6)
    else:
        raw = reversal_config(tmp_path, max_len=5, max_steps=STEPS_WITHOUT_ATTENTION[cell],
                              validate_every=50, learning_rate=0.006, scheduler="exponential",
                              decay_factor=0.8)
    raw["model"]["encoder"]["cell"] = raw["model"]["decoder"]["cell"] = cell
    raw["model"]["decoder"]["attention"] = attention
    raw["model"]["decoder"]["attentional_output"] = attentional_output
    task = train(raw, tmp_path / "run")
    translator = Translator.from_pretrained(tmp_path / "run", device="cpu")
    sources = task.dev.texts["src"]
    references = task.dev.texts["trg"]
    outputs = translator.translate(sources, beam_size=1)
    exact = sum(o == r for o, r in zip(outputs, references)) / len(references)
    assert exact >= 0.95, f"{cell}/{attention}: exact match {exact:.3f}"
    # Beam search on a trained model finds hypotheses at least as probable as greedy's.
    greedy = translator.translate_n_best(sources[:100], beam_size=1, n_best=1, length_penalty=0.0)
    beam = translator.translate_n_best(sources[:100], beam_size=5, n_best=1, length_penalty=0.0)
    for g, b in zip(greedy, beam):
        assert b[0].log_prob >= g[0].log_prob - 1e-4


def test_bfloat16_mixed_precision_on_cpu_learns_and_decodes_like_float32(tmp_path, monkeypatch):
    """training.cpu_amp trains in bfloat16 autocast (weights stay float32) to the same bar, and
    decoding with amp gives the float32 translations of a confident model."""
    low_precision_dtypes = []

    def recording(device, enabled, training=False):  # a product in the trainer's context
        with mixed_precision(device, enabled, training):
            product = torch.ones(1, 2) @ torch.ones(2, 2)
        low_precision_dtypes.append(product.dtype)
        return mixed_precision(device, enabled, training)

    monkeypatch.setattr("seq2seq.training.trainer.mixed_precision", recording)
    # bfloat16 is emulated (slow) on CPUs without bfloat16 hardware: a smaller model, and
    # strings of up to 4 digits, which it learns within 150 steps (100 % exact match at 120).
    raw = reversal_config(tmp_path, max_len=4, max_steps=150, validate_every=50,
                          learning_rate=0.006, cpu_amp=True)
    raw["model"].update(encoder={"hidden_size": 32}, decoder={"hidden_size": 64})
    task = train(raw, tmp_path / "run")
    assert set(low_precision_dtypes) == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in task.model.parameters())
    translator = Translator.from_pretrained(tmp_path / "run", device="cpu")
    sources, references = task.dev.texts["src"], task.dev.texts["trg"]
    for beam in (1, 5):
        low = translator.translate(sources, beam_size=beam, amp=True)
        assert sum(o == r for o, r in zip(low, references)) / len(references) >= 0.95
        full = translator.translate(sources, beam_size=beam)
        assert sum(a == b for a, b in zip(low, full)) / len(full) >= 0.98


@pytest.mark.parametrize("cpu_amp", [False, True])
def test_resumed_run_continues_exactly(tmp_path, cpu_amp):
    """Stopping at step 12 and resuming to 24 gives bit-identical weights and optimizer
    state to one uninterrupted 24-step run (dropout and scheduled sampling draw random
    numbers, so the RNG state must be restored too; the BLEU of so short a run stays flat, so
    the plateau schedule decays the learning rate, and its state must be restored as well), in
    float32 and in bfloat16 autocast."""
    raw = reversal_config(tmp_path, max_len=6, max_steps=24, validate_every=6, log_every=5,
                          teacher_forcing=0.9, scheduler="plateau", scheduler_patience=1,
                          cpu_amp=cpu_amp)
    raw["model"].update(encoder={"hidden_size": 32}, decoder={"hidden_size": 64})
    raw["model"]["embedding_dropout"] = raw["model"]["output_dropout"] = 0.3
    raw["data"]["dev_max_sentences"] = 20
    train(raw, tmp_path / "whole")
    raw["training"]["max_steps"] = 12
    train(raw, tmp_path / "split")
    raw["training"]["max_steps"] = 24
    train(raw, tmp_path / "split", resume=True)
    whole = load_file(str(tmp_path / "whole/checkpoints/step_00000024/model.safetensors"))
    split = load_file(str(tmp_path / "split/checkpoints/step_00000024/model.safetensors"))
    assert whole.keys() == split.keys()
    for name in whole:
        assert torch.equal(whole[name], split[name]), name
    opt_whole = torch.load(tmp_path / "whole/checkpoints/step_00000024/state.pt", weights_only=True)
    opt_split = torch.load(tmp_path / "split/checkpoints/step_00000024/state.pt", weights_only=True)
    for a, b in zip(opt_whole["optimizer"]["state"].values(), opt_split["optimizer"]["state"].values()):
        assert torch.equal(a["exp_avg"], b["exp_avg"])
    steps = [__import__("json").loads(line)["step"]
             for line in (tmp_path / "split/metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and max(steps) == 24


def test_checkpoint_round_trip_and_best_k(tmp_path):
    raw = reversal_config(tmp_path, max_len=4, max_steps=60, validate_every=20, keep_best=2,
                          keep_last=1, average_best=2)
    task = train(raw, tmp_path / "run")
    run = RunDirectory(tmp_path / "run")
    assert [p.name for p in run.list_checkpoints()] == ["step_00000060"]  # keep_last 1
    assert len(run.best_index()) == 2 and len(list(run.best_dir.glob("*.safetensors"))) == 2
    assert not list(run.path.rglob("*.tmp")) and not list(run.checkpoints.glob(".partial_*"))
    # model.safetensors is the average of the two best checkpoints.
    best = [load_file(str(p)) for p in run.best_paths(2)]
    final = load_file(str(run.model_path))
    name = "decoder.rnn.weight_hh_l0"
    assert torch.allclose(final[name], (best[0][name] + best[1][name]) / 2, atol=1e-6)
    # Loading the weights into a fresh model reproduces them exactly.
    fresh = TranslationTask(task.config, task.train, task.dev, task.src_tokenizer,
                            task.trg_tokenizer, torch.device("cpu")).model
    load_weights(fresh, run.model_path)
    assert torch.equal(fresh.state_dict()[name], final[name])


def test_learning_rate_schedules():
    warm = LearningRateSchedule("inverse_sqrt", 1.0, warmup_steps=100)
    assert warm.lr_at(50) == pytest.approx(0.5)
    assert warm.lr_at(100) == pytest.approx(1.0)
    assert warm.lr_at(400) == pytest.approx(0.5)
    plateau = LearningRateSchedule("plateau", 1.0, decay_factor=0.5, patience=1)
    for score in (10, 9, 8):  # two validations without improvement -> one decay
        plateau.after_validation(score, higher_is_better=True)
    assert plateau.lr_at(1) == pytest.approx(0.5)
    exponential = LearningRateSchedule("exponential", 1.0, decay_factor=0.9)
    exponential.after_validation(0, True)
    assert exponential.lr_at(1) == pytest.approx(0.9)


def test_only_training_caps_the_bfloat16_kernel_cache(monkeypatch):
    """Training keeps 16 compiled oneDNN kernels (memory); search keeps the library's default
    (its many shapes would be recompiled); a value the user set is left alone."""
    cpu = torch.device("cpu")
    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", raising=False)
    with mixed_precision(cpu, True):
        pass
    assert "ONEDNN_PRIMITIVE_CACHE_CAPACITY" not in os.environ
    with mixed_precision(cpu, True, training=True):
        pass
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "16"
    monkeypatch.setenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "0")
    with mixed_precision(cpu, True, training=True):
        pass
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "0"
