"""The language-model head: it learns, carries state across BPTT windows, samples
reproducibly, conditions, scores, resumes exactly, and its command line handles bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from rich.console import Console
from safetensors.torch import load_file

from seq2seq import Generator, runtime
from seq2seq.config import config_from_dict, dump_config
from seq2seq.data.language_model import StreamWindows, evaluation_layout
from seq2seq.models.language_model import LanguageModel
from seq2seq.run_directory import RunDirectory
from seq2seq.search import greedy_search
from seq2seq.tasks.language_model import LanguageModelTask
from seq2seq.tokenizers import EOS_ID, PAD_ID, train_tokenizer
from seq2seq.training.trainer import Trainer

from .cli_helpers import assert_user_error, run_cli

ROOT = Path(__file__).resolve().parents[1]
SHAKESPEARE = ROOT / "data" / "tiny-shakespeare" / "input.txt"
QUIET = Console(stderr=True, quiet=True)

# Two characters of context always tell the next one, so even the first steps from a
# zero state are determined.
PANGRAM = "pack my box with five dozen liquor jugs\n"
# The closing letter repeats the opening one 6 characters back: beyond a 4-token window.
LONG_RANGE = "A.....A\nB.....B\n"


def stream_config(train: Path, *, bptt: int = 16, steps: int = 150, cell: str = "lstm",
                  **training) -> dict:
    return {
        "task": "language_model",
        "data": {"train": str(train), "lm_mode": "stream", "bptt": bptt, "dev_fraction": 0.1},
        "tokenizer": {"kind": "char"},
        "model": {"embedding_size": 16,
                  "encoder": {"cell": cell, "hidden_size": 64, "bidirectional": False,
                              "dropout": 0.0},
                  "embedding_dropout": 0.0, "output_dropout": 0.0},
        "training": {"batch_size": 16, "learning_rate": 0.01, "max_steps": steps,
                     "validate_every": steps, "log_every": 50, "max_epochs": 1000, **training},
    }


def train(raw: dict, run_path: Path, resume: bool = False,
          task_class: type[LanguageModelTask] = LanguageModelTask) -> LanguageModelTask:
    config = config_from_dict(raw)
    torch.manual_seed(config.training.seed)
    run = RunDirectory(run_path)
    run.path.mkdir(exist_ok=True)
    task = task_class.setup(config, run, resume, torch.device("cpu"), QUIET)
    if not resume:
        run.config_path.write_text(dump_config(config))
        run.write_run_info("language_model", "test")
    trainer = Trainer(task, config.training, run, torch.device("cpu"), QUIET, show_progress=False)
    if resume:
        trainer.resume()
    trainer.train()
    return task


@pytest.fixture(scope="module")
def pangram_run(tmp_path_factory) -> Path:
    """A character LSTM trained on one repeated sentence (shared by the inference tests)."""
    directory = tmp_path_factory.mktemp("pangram")
    (directory / "train.txt").write_text(PANGRAM * 150, encoding="utf-8")
    task = train(stream_config(directory / "train.txt"), directory / "run")
    assert task.validate().metrics["loss"] < 0.05
    return directory / "run"


# --------------------------------------------------------------------------------------
# Learning


def test_learns_a_repeated_sentence_and_generates_it_greedily(pangram_run):
    generator = Generator.from_pretrained(pangram_run, device="cpu")
    metrics = generator.perplexity([PANGRAM.strip()] * 5)
    assert metrics.loss < 0.05 and metrics.ppl < 1.06
    # From the start symbol (a newline) and a zero state: the sentence, at the latest from
    # the second line on (a zero state is where training rows start: anywhere in the text).
    found = generator.generate("", max_tokens=len(PANGRAM) * 3, greedy=True)[0]
    assert found.text.split("\n")[1:3] == [PANGRAM.strip()] * 2
    assert not found.finished and found.tokens == len(PANGRAM) * 3
    continued = generator.generate("liquor", max_tokens=12, greedy=True)[0]
    assert continued.text == "liquor jugs\npack m"
    assert continued.continuation == " jugs\npack m"


def test_a_generator_keeps_its_packed_output_layer_and_generates_the_same(pangram_run,
                                                                         monkeypatch):
    from seq2seq.models import functional

    if not functional.PACKING_AVAILABLE:
        pytest.skip("this torch build has no oneDNN")
    options = [{"greedy": True}, {"beam_size": 3, "num_samples": 2},
               {"temperature": 1.3, "num_samples": 3, "seed": 7}]
    monkeypatch.setattr(functional, "PACKING_AVAILABLE", False)
    unpacked = Generator.from_pretrained(pangram_run, device="cpu")
    expected = [[g.text for g in unpacked.generate("pack", max_tokens=30, **o)] for o in options]
    monkeypatch.setattr(functional, "PACKING_AVAILABLE", True)
    generator = Generator.from_pretrained(pangram_run, device="cpu")
    assert [[g.text for g in generator.generate("pack", max_tokens=30, **o)]
            for o in options] == expected
    weight = generator.model.output_layer.weight
    kept = generator.packed._copies[id(weight)][2]  # packed at the first call, kept since
    generator.generate("jugs", max_tokens=5, greedy=True)
    assert generator.packed._copies[id(weight)][2] is kept


class ResetEveryWindow(LanguageModelTask):
    """The control: truncated BPTT that forgets the state at every window."""

    def loss(self, batch, step):
        self.mode.carried = None
        return super().loss(batch, step)


def test_truncated_bptt_carries_the_state_across_windows(tmp_path):
    """A dependency 6 tokens long is learned with 4-token windows only because the state is
    carried from window to window; resetting it every window, it is not learned."""
    (tmp_path / "train.txt").write_text(LONG_RANGE * 300, encoding="utf-8")
    raw = stream_config(tmp_path / "train.txt", bptt=4, steps=600)
    carried = train(raw, tmp_path / "carried")
    reset = train(raw, tmp_path / "reset", task_class=ResetEveryWindow)
    # Dev loss with the state carried through the whole dev text, for both models. A model
    # that sees only the last 3 tokens cannot do better than about 0.33 nats per token here.
    assert carried.validate().metrics["loss"] < 0.05
    assert reset.validate().metrics["loss"] > 0.3
    generator = Generator.from_pretrained(tmp_path / "carried", device="cpu")
    found = generator.generate("A.....A\nB", max_tokens=len(LONG_RANGE) * 6 - 9, greedy=True)
    assert found[0].text == LONG_RANGE * 6


def test_stream_layout_keeps_rows_contiguous_across_windows():
    """Row r of window k+1 continues exactly where row r of window k stopped."""
    ids = torch.arange(1000).numpy()
    windows = StreamWindows(ids, rows=4, bptt=7, seed=3)
    for epoch in (0, 1):
        batches = [windows.batch(w) for w in windows.epoch_windows(epoch)]
        inputs = torch.cat([b.inputs for b in batches], dim=1)
        targets = torch.cat([b.targets for b in batches], dim=1)
        assert torch.equal(targets[:, :-1], inputs[:, 1:])
        assert torch.equal(inputs[:, 1:] - inputs[:, :-1], torch.ones_like(inputs[:, 1:]))
        assert [b.window for b in batches] == list(range(len(batches)))
    offsets = {int(windows.batch(windows.epoch_windows(e)[0]).inputs[0, 0]) for e in range(6)}
    assert len(offsets) > 1  # window boundaries move from epoch to epoch


def test_evaluation_layout_scores_every_token_once_with_context():
    ids = torch.arange(5, 2005).numpy()
    inputs, targets = evaluation_layout(ids, rows=8, context=16)
    scored = targets[targets != PAD_ID]
    assert sorted(scored.tolist()) == ids[1:].tolist()
    # Every scored target follows its true predecessor, and rows after the first start with
    # 16 unscored tokens of context.
    rows, cols = (targets != PAD_ID).nonzero()
    assert (inputs[rows, cols] == targets[rows, cols] - 1).all()
    assert (targets[1:, :16] == PAD_ID).all() and (targets[0, :16] != PAD_ID).all()


# --------------------------------------------------------------------------------------
# Sampling


def random_generator(seed: int = 0, cell: str = "gru") -> Generator:
    """An untrained model: its distributions are far from peaked, so choices matter."""
    raw = stream_config(Path("unused.txt"), cell=cell)
    raw["model"]["encoder"]["layers"] = 2
    config = config_from_dict(raw)
    tokenizer = train_tokenizer([PANGRAM], "char")
    torch.manual_seed(seed)
    model = LanguageModel(config.model, tokenizer.vocab_size)
    with torch.no_grad():
        model.output_layer.weight.mul_(4.0)
    return Generator(config, model, tokenizer, None, torch.device("cpu"))


def test_sampling_with_a_seed_is_reproducible():
    generator = random_generator()
    first = generator.generate("box", max_tokens=60, seed=11, num_samples=3)
    again = generator.generate("box", max_tokens=60, seed=11, num_samples=3)
    other = generator.generate("box", max_tokens=60, seed=12, num_samples=3)
    assert [g.text for g in first] == [g.text for g in again]
    assert [g.log_prob for g in first] == [g.log_prob for g in again]
    assert [g.text for g in first] != [g.text for g in other]
    assert len({g.text for g in first}) == 3  # the samples of one call differ
    assert all(g.text.startswith("box") and g.seed == 11 for g in first)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_top_k_one_is_greedy_search(cell):
    generator = random_generator(seed=5, cell=cell)
    greedy = generator.generate("pack m", max_tokens=40, greedy=True)[0]
    top1 = generator.generate("pack m", max_tokens=40, top_k=1, temperature=3.0, seed=1)[0]
    sampled = generator.generate("pack m", max_tokens=40, temperature=3.0, seed=1)[0]
    assert top1.text == greedy.text and top1.log_prob == pytest.approx(greedy.log_prob)
    assert sampled.text != greedy.text
    # ... and both equal the shared greedy_search run on the same primed state.
    context = [generator.start] + generator.tokenizer.encode("pack m")
    state, first = generator._prime(context, None)
    found = greedy_search(generator.searched, state, first, torch.tensor([41]))[0]
    assert generator.tokenizer.decode(found.tokens) == greedy.continuation


def test_streamed_text_equals_the_returned_text():
    generator = random_generator(seed=2)
    pieces: dict[int, list[str]] = {0: [], 1: []}
    found = generator.generate("dozen", max_tokens=30, seed=4, num_samples=2,
                               on_token=lambda i, text: pieces[i].append(text))
    assert ["".join(pieces[i]) for i in (0, 1)] == [g.continuation for g in found]


def test_reported_log_prob_is_the_models(pangram_run):
    """The log-probability of a continuation stopped at max_tokens is the sum of its
    tokens' step by step (no </s> forced at the limit is counted)."""
    generator = Generator.from_pretrained(pangram_run, device="cpu")
    found = generator.generate("five", max_tokens=5, greedy=True)[0]
    assert found.continuation == " doze" and not found.finished
    context = [generator.start] + generator.tokenizer.encode("five")
    state, token = generator._prime(context, None)
    expected = 0.0
    with torch.no_grad():
        for next_id in generator.tokenizer.encode(" doze"):
            log_probs, state, _ = generator.model.decode_step(token, state)
            expected += float(log_probs[0, next_id])
            token = torch.tensor([next_id])
    assert found.log_prob == pytest.approx(expected, abs=1e-4)
    assert expected > -1.0  # a learned sentence is probable


# --------------------------------------------------------------------------------------
# Conditioning


def write_conditioned(path: Path, features: bool = False) -> None:
    rows = ["text\tlabel"]
    for i in range(200):
        if i % 2:
            rows.append("a b c d e f\t" + ("1 0" if features else "up"))
        else:
            rows.append("f e d c b a\t" + ("0 1" if features else "down"))
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")


def conditioned_config(train: Path, condition_type: str, mode: str) -> dict:
    return {
        "task": "language_model",
        "data": {"train": str(train), "lm_mode": "lines", "condition": "label",
                 "dev_fraction": 0.1},
        "tokenizer": {"kind": "word"},
        "model": {"embedding_size": 16,
                  "encoder": {"cell": "gru", "hidden_size": 32, "bidirectional": False},
                  "language_model": {"condition_type": condition_type, "condition_mode": mode,
                                     "condition_size": 8},
                  "embedding_dropout": 0.0, "output_dropout": 0.0},
        "training": {"batch_size": 20, "learning_rate": 0.01, "max_steps": 80,
                     "validate_every": 80, "max_epochs": 100},
    }


@pytest.mark.parametrize("condition_type,mode", [("label", "init"), ("label", "input"),
                                                 ("features", "both")])
def test_two_conditions_give_two_learned_sequences(tmp_path, condition_type, mode):
    features = condition_type == "features"
    write_conditioned(tmp_path / "train.tsv", features)
    task = train(conditioned_config(tmp_path / "train.tsv", condition_type, mode),
                 tmp_path / "run")
    assert task.validate().metrics["loss"] < 0.05
    generator = Generator.from_pretrained(tmp_path / "run", device="cpu")
    up = generator.generate(condition="1 0" if features else "up", greedy=True)[0]
    down = generator.generate(condition="0 1" if features else "down", greedy=True)[0]
    assert (up.text, down.text) == ("a b c d e f", "f e d c b a")
    assert up.finished and down.finished  # stopped at </s>
    beams = generator.generate(condition="0 1" if features else "down", beam_size=3)
    assert beams[0].text == "f e d c b a"  # beams reordered, the condition kept per sequence
    if not features:
        labels = json.loads((tmp_path / "run" / "conditions.json").read_text())["labels"]
        assert labels == ["down", "up"]
        assert "sample (down):" in task.validate().examples


# --------------------------------------------------------------------------------------
# Scoring


@pytest.mark.parametrize("lm_mode", ["stream", "lines"])
def test_perplexity_of_a_uniform_model_is_the_vocabulary_size(lm_mode):
    generator = random_generator()
    generator.config.data.lm_mode = lm_mode
    with torch.no_grad():
        generator.model.output_layer.weight.zero_()
        generator.model.output_layer.bias.zero_()
    texts = ["pack my box", "with five", "dozen liquor jugs"]
    scores = generator.perplexity(texts)
    vocab = generator.tokenizer.vocab_size
    assert scores.ppl == pytest.approx(vocab, rel=1e-5)
    assert scores.bpc == pytest.approx(math.log2(vocab), rel=1e-5)  # one token per character
    assert scores.tokens == scores.characters == sum(len(t) + 1 for t in texts)


# --------------------------------------------------------------------------------------
# Exact resume


def test_resumed_stream_run_continues_exactly(tmp_path):
    """Stop at step 20 of a 60-window epoch and resume to 40: bit-identical weights,
    optimizer and carried state to an uninterrupted 40-step run (dropout draws random
    numbers; the carried LSTM state must be restored too)."""
    (tmp_path / "train.txt").write_text(SHAKESPEARE.read_text(encoding="utf-8")[:8000],
                                        encoding="utf-8")
    raw = stream_config(tmp_path / "train.txt", bptt=16, steps=40, batch_size=8,
                        validate_every=20)
    raw["model"].update(embedding_dropout=0.1, output_dropout=0.2)
    raw["model"]["encoder"].update(layers=2, dropout=0.2)
    raw["model"]["language_model"] = {"locked_dropout": True}
    train(raw, tmp_path / "whole")
    raw["training"]["max_steps"] = 20
    halfway = train(raw, tmp_path / "split")
    assert len(halfway.train_batches(0)) > 40  # the stop is mid-epoch: the state matters
    raw["training"]["max_steps"] = 40
    train(raw, tmp_path / "split", resume=True)
    for name in ("model.safetensors",):
        whole = load_file(str(tmp_path / f"whole/checkpoints/step_00000040/{name}"))
        split = load_file(str(tmp_path / f"split/checkpoints/step_00000040/{name}"))
        assert whole.keys() == split.keys()
        for key in whole:
            assert torch.equal(whole[key], split[key]), key
    states = [torch.load(tmp_path / f"{run}/checkpoints/step_00000040/state.pt",
                         weights_only=True) for run in ("whole", "split")]
    assert set(states[0]["task"]) == {"hidden", "cell"}
    for key in ("hidden", "cell"):
        assert torch.equal(states[0]["task"][key], states[1]["task"][key])
    for a, b in zip(states[0]["optimizer"]["state"].values(),
                    states[1]["optimizer"]["state"].values()):
        assert torch.equal(a["exp_avg"], b["exp_avg"])


# --------------------------------------------------------------------------------------
# The command line


@pytest.fixture(scope="module")
def shakespeare_run(tmp_path_factory) -> Path:
    """`seq2seq train` of the demo config on a slice of tiny Shakespeare, tiny model."""
    directory = tmp_path_factory.mktemp("shakespeare")
    (directory / "slice.txt").write_text(SHAKESPEARE.read_text(encoding="utf-8")[:20000],
                                         encoding="utf-8")
    result = run_cli("train", ROOT / "configs" / "demo_shakespeare.yaml", "--run-dir",
                     directory / "run", "-q", "--set", f"data.train={directory / 'slice.txt'}",
                     "--set", "training.max_steps=20", "--set", "training.validate_every=10",
                     "--set", "model.encoder.hidden_size=32", "--set", "training.num_threads=1")
    assert result.exit_code == 0, result.output
    assert "Validation at step 20" in result.output and "sample:" in result.output
    return directory / "run"


def test_cli_generate_streams_and_repeats_with_a_seed(shakespeare_run):
    first = run_cli("generate", shakespeare_run, "--prompt", "ROMEO:", "--max-tokens", 50,
                    "--seed", 3)
    again = run_cli("generate", shakespeare_run, "--prompt", "ROMEO:", "--max-tokens", 50,
                    "--seed", 3)
    assert first.exit_code == 0, first.output
    assert first.stdout == again.stdout and first.stdout.startswith("ROMEO:")
    assert len(first.stdout) == len("ROMEO:") + 50 + 1  # 50 characters and a final newline
    jsonl = run_cli("generate", shakespeare_run, "--format", "jsonl", "--num-samples", 2,
                    "--max-tokens", 20, "--seed", 3, "--temperature", 0.5, "--top-k", 5,
                    "--top-p", 0.9)
    rows = [json.loads(line) for line in jsonl.stdout.splitlines()]
    assert [r["sample"] for r in rows] == [0, 1] and all(r["tokens"] == 20 for r in rows)
    assert all(r["seed"] == 3 and r["log_prob"] < 0 for r in rows)
    beam = run_cli("generate", shakespeare_run, "--beam-size", 3, "--num-samples", 2,
                   "--max-tokens", 10, "--format", "jsonl")
    assert beam.exit_code == 0, beam.output
    scores = [json.loads(line)["log_prob"] for line in beam.stdout.splitlines()]
    assert len(scores) == 2


def test_cli_generate_uses_one_thread_for_a_single_stream(shakespeare_run, monkeypatch):
    chosen = []
    monkeypatch.setattr(runtime, "configure_threads",
                        lambda num_threads=0: chosen.append(num_threads))
    for options in (["--seed", 1], ["--greedy"], ["--num-samples", 3], ["--beam-size", 2],
                    ["--num-samples", 3, "--threads", 2]):
        result = run_cli("generate", shakespeare_run, "--max-tokens", 5, *options)
        assert result.exit_code == 0, result.output
    assert chosen == [1, 1, 0, 0, 2]  # 0 = every core
    assert_user_error(run_cli("generate", shakespeare_run, "--threads", -1), "--threads", ">= 0")


def test_cli_evaluate_reports_perplexity_and_bpc(shakespeare_run, tmp_path):
    held_out = tmp_path / "held_out.txt"
    held_out.write_text(SHAKESPEARE.read_text(encoding="utf-8")[20000:24000], encoding="utf-8")
    result = run_cli("evaluate", shakespeare_run, "--data", held_out,
                     "--output-dir", tmp_path / "eval")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["task"] == "language_model"
    assert metrics["bpc"] == pytest.approx(metrics["loss"] / math.log(2), rel=1e-3)  # chars
    assert 1.0 < metrics["ppl"] < 70 and f"perplexity {metrics['ppl']:.2f}" in result.output
    # Fewer parallel rows: each still re-reads its context, so the score barely moves.
    rows = run_cli("evaluate", shakespeare_run, "--data", held_out, "--batch-size", 2,
                   "--output-dir", tmp_path / "eval2")
    assert rows.exit_code == 0, rows.output
    again = json.loads((tmp_path / "eval2" / "metrics.json").read_text())
    assert again["tokens"] == metrics["tokens"]
    assert again["loss"] == pytest.approx(metrics["loss"], rel=0.02)
    # Without --data and without a test split: the held-out dev part, with a note.
    default = run_cli("evaluate", shakespeare_run)
    assert default.exit_code == 0, default.output
    assert "evaluating on the dev split" in default.output
    assert (shakespeare_run / "eval" / "dev" / "metrics.json").is_file()  # filed as what it is
    assert not (shakespeare_run / "eval" / "test").exists()


def test_cli_prompt_outside_the_vocabulary_falls_back_to_unknown(shakespeare_run):
    result = run_cli("generate", shakespeare_run, "--prompt", "Ωμέγα ROMEO", "--max-tokens",
                     10, "--seed", 1)
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "'Ω'" in notes[0] and "unknown" in notes[0]
    assert result.stdout.startswith("Ωμέγα ROMEO")
    empty = run_cli("generate", shakespeare_run, "--max-tokens", 10, "--seed", 1)
    assert empty.exit_code == 0 and len(empty.stdout) == 11  # from the start symbol


@pytest.mark.parametrize("option,value,words", [
    ("--top-p", "0", ["top_p", "(0, 1]"]),
    ("--top-p", "1.5", ["top_p", "(0, 1]"]),
    ("--temperature", "0", ["temperature", "> 0"]),
    ("--temperature", "-1", ["temperature", "> 0"]),
    ("--max-tokens", "0", ["max_tokens", ">= 1"]),
    ("--top-k", "-2", ["top_k", ">= 0"]),
    ("--format", "xml", ["--format", "text, jsonl"]),
    ("--condition", "positive", ["not conditioned"]),
])
def test_cli_generate_bad_options(shakespeare_run, option, value, words):
    assert_user_error(run_cli("generate", shakespeare_run, option, value), *words)


def test_a_refused_generation_prints_nothing_on_stdout(shakespeare_run):
    """The prompt is echoed with the first generated text, so an error comes alone."""
    for args in (["--condition", "positive"], ["--seed", str(2**70)]):
        result = run_cli("generate", shakespeare_run, "--prompt", "ROMEO:", *args)
        assert_user_error(result, args[0])
        assert result.stdout == ""


def test_generation_scores_the_prompt_without_its_logits(pangram_run, monkeypatch):
    """A long prompt costs one pass of the recurrent layers, not a [samples, prompt length,
    vocabulary] tensor of logits (which grew memory with prompt length x samples)."""
    generator = Generator.from_pretrained(pangram_run, device="cpu")
    widths = []
    real_logits = generator.model.logits

    def recording(features):
        widths.append(features.shape[1] if features.dim() == 3 else 1)
        return real_logits(features)

    monkeypatch.setattr(generator.model, "logits", recording)
    prompt = PANGRAM * 20
    results = generator.generate(prompt, max_tokens=6, num_samples=3, seed=1)
    assert len(results) == 3 and max(widths) <= 7, widths
    for result in results:  # the score is still the model's: read step by step after the prompt
        context = [generator.start] + generator.tokenizer.encode(prompt)
        state, token = generator._prime(context, None)
        expected = 0.0
        ids = generator.tokenizer.encode(result.continuation)
        with torch.no_grad():
            for next_id in ids + ([EOS_ID] if result.finished else []):
                log_probs, state, _ = generator.model.decode_step(token, state)
                expected += float(log_probs[0, next_id])
                token = torch.tensor([next_id])
        assert result.log_prob == pytest.approx(expected, abs=1e-3)


def test_cli_bad_runs_and_files(shakespeare_run, tmp_path):
    assert_user_error(run_cli("generate", tmp_path / "nowhere"), "run directory not found")
    assert_user_error(run_cli("evaluate", shakespeare_run, "--data", tmp_path / "none.txt"),
                      "not found")
    assert_user_error(run_cli("generate", shakespeare_run, "--greedy", "--num-samples", 2),
                      "greedy")


def test_cli_conditioned_model_needs_a_known_label(tmp_path):
    write_conditioned(tmp_path / "train.tsv")
    raw = conditioned_config(tmp_path / "train.tsv", "label", "init")
    raw["training"].update(max_steps=4, validate_every=4)
    config = tmp_path / "cond.yaml"
    config.write_text(yaml.safe_dump(raw), encoding="utf-8")
    trained = run_cli("train", config, "--run-dir", tmp_path / "run", "-q")
    assert trained.exit_code == 0, trained.output
    assert_user_error(run_cli("generate", tmp_path / "run", "--condition", "sideways"),
                      "'sideways'", "down, up")
    assert_user_error(run_cli("generate", tmp_path / "run"), "--condition", "down, up")
    ok = run_cli("generate", tmp_path / "run", "--condition", "up", "--max-tokens", 5)
    assert ok.exit_code == 0, ok.output


def test_bad_training_data_is_one_line_error(tmp_path):
    write_conditioned(tmp_path / "train.tsv")
    with open(tmp_path / "train.tsv", "a", encoding="utf-8") as handle:
        handle.write("a b c\t\n")  # line 202: no condition
    raw = conditioned_config(tmp_path / "train.tsv", "label", "init")
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump(raw), encoding="utf-8")
    result = run_cli("train", config, "--run-dir", tmp_path / "run", "-q")
    assert_user_error(result, "line 202", "no condition", "bad_rows")
    assert not (tmp_path / "run").exists()
    raw["data"].update(lm_mode="stream")
    config.write_text(yaml.safe_dump(raw), encoding="utf-8")
    assert_user_error(run_cli("train", config, "--run-dir", tmp_path / "run2", "-q"),
                      "data.condition", "lines")
