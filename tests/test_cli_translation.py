"""The command line for translation: train -> translate -> evaluate, and every bad input.

Each user mistake must give one line ``error: ...`` naming the file/line/key, exit status 2,
no traceback, and no run directory left behind that looks valid.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from seq2seq.pretrained import open_run

from .cli_helpers import assert_user_error, run_cli

ROOT = Path(__file__).resolve().parents[1]


def write_pairs(path: Path, n: int, seed: int) -> None:
    """Digit strings and their reversals (TSV with a header): learnable in a few steps."""
    rng = random.Random(seed)
    rows = ["src\ttrg"]
    for _ in range(n):
        digits = [rng.choice("0123456789") for _ in range(rng.randint(1, 5))]
        rows.append(f"{' '.join(digits)}\t{' '.join(reversed(digits))}")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")


def tiny_config(directory: Path, **data) -> Path:
    write_pairs(directory / "train.tsv", 400, seed=0)
    write_pairs(directory / "dev.tsv", 30, seed=1)
    write_pairs(directory / "test.tsv", 30, seed=2)
    raw = {
        "task": "translation",
        "name": "tiny",
        "data": {"train": str(directory / "train.tsv"), "dev": str(directory / "dev.tsv"),
                 "test": str(directory / "test.tsv"), "max_src_length": 8, **data},
        "tokenizer": {"kind": "word", "vocab_size": 20},
        "model": {"embedding_size": 16, "encoder": {"hidden_size": 16},
                  "decoder": {"hidden_size": 32}},
        "training": {"batch_size": 32, "max_steps": 24, "validate_every": 12, "log_every": 6},
        "decoding": {"beam_size": 2},
    }
    path = directory / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One tiny trained run shared by the inference tests."""
    directory = tmp_path_factory.mktemp("cli")
    config = tiny_config(directory)
    run = directory / "run"
    result = run_cli("train", config, "--run-dir", run, "-q")
    assert result.exit_code == 0, result.output
    return run


# ---- the happy path ----------------------------------------------------------------------

def test_train_writes_a_complete_run_directory(trained):
    for name in ("run.json", "config.yaml", "joint.json", "model.safetensors", "metrics.jsonl",
                 "validation.log", "sacrebleu_signature.txt"):
        assert (trained / name).is_file(), name
    assert [p.name for p in (trained / "checkpoints").iterdir()] == ["step_00000024"]
    rows = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert {r["type"] for r in rows} == {"train", "valid"}
    assert "bleu: nrefs:1|case:mixed" in (trained / "sacrebleu_signature.txt").read_text()


def test_translate_arguments_file_and_stdin_agree(trained, tmp_path):
    sentences = ["1 2 3", "", "4 5", "7"]
    from_args = run_cli("translate", trained, *sentences)
    assert from_args.exit_code == 0, from_args.output
    lines = from_args.stdout.splitlines()
    assert len(lines) == 4 and lines[1] == ""  # empty input line -> empty output line
    source = tmp_path / "in.txt"
    source.write_text("\n".join(sentences) + "\n", encoding="utf-8")
    output = tmp_path / "out.txt"
    from_file = run_cli("translate", trained, "--input", source, "--output", output)
    assert from_file.exit_code == 0 and output.read_text().splitlines() == lines
    from_stdin = run_cli("translate", trained, input="\n".join(sentences) + "\n")
    assert from_stdin.stdout.splitlines() == lines


def test_translate_n_best_prints_index_score_text(trained):
    result = run_cli("translate", trained, "--beam-size", "3", "--n-best", "3", "1 2", "", "3")
    assert result.exit_code == 0, result.output
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    # n rows for every input line, the empty one included (as n empty translations)
    assert [r[0] for r in rows] == ["0", "0", "0", "1", "1", "1", "2", "2", "2"]
    assert [r[2] for r in rows[3:6]] == ["", "", ""]
    scores = [float(r[1]) for r in rows[:3]]
    assert scores == sorted(scores, reverse=True)


def test_translate_api_refuses_a_plain_string(trained):
    from seq2seq import Translator

    translator = Translator.from_pretrained(trained, device="cpu")
    with pytest.raises(TypeError, match=r"\[text\]"):
        translator.translate("1 2 3")  # would otherwise be 5 one-character sentences
    assert len(translator.translate(["1 2 3"])) == 1


def test_translate_returns_one_type_and_n_best_has_its_own_method(trained):
    from seq2seq import Translator

    translator = Translator.from_pretrained(trained, device="cpu")
    best = translator.translate(["1 2 3", ""], beam_size=2)
    assert all(isinstance(text, str) for text in best)
    found = translator.translate_n_best(["1 2 3", ""], beam_size=2, n_best=2)
    assert [len(hypotheses) for hypotheses in found] == [2, 2]
    assert found[0][0].text == best[0] and found[0][0].score >= found[0][1].score
    with pytest.raises(TypeError, match="translate_n_best"):
        translator.translate(["1 2 3"], n_best=2)


def test_a_translator_packs_its_output_layer_once_and_translates_the_same(trained,
                                                                          monkeypatch):
    from seq2seq import Translator
    from seq2seq.models import functional

    if not functional.PACKING_AVAILABLE:
        pytest.skip("this torch build has no oneDNN")
    sentences = ["1 2 3", "4 5 6 7 8", "9", "3 1 4 1 5 9 2 6"]
    monkeypatch.setattr(functional, "PACKING_AVAILABLE", False)
    unpacked = Translator.from_pretrained(trained, device="cpu").translate_n_best(
        sentences, beam_size=3, n_best=2)
    monkeypatch.setattr(functional, "PACKING_AVAILABLE", True)
    monkeypatch.setattr(functional, "PACKED_MIN_OUTPUTS", 1)  # the tiny vocabulary too
    translator = Translator.from_pretrained(trained, device="cpu")

    def copies():
        return {key: id(packed) for key, (_, _, packed) in translator.packed._copies.items()}

    translator.translate(sentences, beam_size=3)
    first = copies()
    assert id(translator.model.output_layer.weight) in first
    translator.translate(sentences, beam_size=1)
    assert copies() == first  # kept from call to call, not packed again
    again = translator.translate_n_best(sentences, beam_size=3, n_best=2)
    assert [[h.text for h in hyps] for hyps in again] == [[h.text for h in hyps]
                                                          for hyps in unpacked]
    for hyps, expected in zip(again, unpacked, strict=True):
        assert [h.score for h in hyps] == pytest.approx([h.score for h in expected], abs=1e-5)


@pytest.mark.parametrize("onednn", [True, False])
def test_a_translator_packs_every_row_count_only_where_decoding_onednn_says(trained,
                                                                           monkeypatch, onednn):
    from seq2seq import Translator
    from seq2seq.models import functional

    if not functional.PACKING_AVAILABLE:
        pytest.skip("this torch build has no oneDNN")
    sentences = [" ".join(str(1 + (i * j) % 9) for j in range(1 + i % 7)) for i in range(30)]
    monkeypatch.setattr(functional, "PACKED_MAX_ROWS", 0)  # no narrow weight packed unless
    translator = Translator.from_pretrained(trained, device="cpu")
    plain = translator.translate_n_best(sentences, beam_size=3, n_best=2, onednn=False)
    assert id(translator.model.decoder.combine.weight) not in translator.packed._copies
    found = translator.translate_n_best(sentences, beam_size=3, n_best=2, onednn=onednn)
    combine = id(translator.model.decoder.combine.weight) in translator.packed._copies
    assert combine is onednn  # packed at every row count only when told (or measured) to
    assert [[h.text for h in hyps] for hyps in found] == [[h.text for h in hyps] for hyps in plain]
    for hyps, expected in zip(found, plain, strict=True):
        assert [h.score for h in hyps] == pytest.approx([h.score for h in expected], abs=1e-5)


def test_a_min_length_above_the_length_budget_is_noted(trained):
    result = run_cli("translate", trained, "--min-length", "30", "1 2", "3 4 5 6 7 8")
    assert result.exit_code == 0, result.output
    assert "note: for 2 sentence(s) --min-length" in result.output
    assert "--min-length" not in run_cli("translate", trained, "--min-length", "2", "1 2").output


def test_overlong_sentences_are_truncated_and_counted(trained):
    long = " ".join(["1"] * 30)  # data.max_src_length is 8 tokens
    result = run_cli("translate", trained, long, "2 3")
    assert result.exit_code == 0
    assert "1 sentence(s) longer than 8 tokens were truncated" in result.output


def test_evaluate_split_and_files(trained, tmp_path):
    result = run_cli("evaluate", trained, "--beam-size", "1")
    assert result.exit_code == 0, result.output
    for word in ("BLEU", "chrF2", "TER", "signature"):
        assert word in result.stdout
    metrics = json.loads((trained / "eval" / "test" / "metrics.json").read_text())
    assert {"bleu", "chrf", "ter", "signatures", "sentences"} <= metrics.keys()
    assert metrics["sentences"] == 30
    lines = (trained / "eval" / "test" / "hypotheses.txt").read_text().splitlines()
    assert len(lines) == 30

    src, ref = tmp_path / "t.src", tmp_path / "t.ref"
    src.write_text("1 2\n3 4\n", encoding="utf-8")
    ref.write_text("2 1\n4 3\n", encoding="utf-8")
    out = tmp_path / "eval"
    result = run_cli("evaluate", trained, "--src", src, "--ref", ref, "--output-dir", out)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "metrics.json").read_text())["sentences"] == 2
    # a file named like a split gets its own folder, not the split's
    dev = tmp_path / "dev.tsv"
    dev.write_text("src\ttrg\n1 2\t2 1\n", encoding="utf-8")
    assert run_cli("evaluate", trained, "--data", dev, "--beam-size", "1").exit_code == 0
    assert json.loads((trained / "eval" / "dev.tsv" / "metrics.json").read_text())["sentences"] == 1
    assert not (trained / "eval" / "dev").exists()


def test_python_cli_entry_from_a_checkout(trained):
    """`python cli.py ...` runs the same app as the installed `seq2seq` command."""
    done = subprocess.run([sys.executable, str(ROOT / "cli.py"), "translate", str(trained), "1 2"],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 1


def test_inference_commands_exit_without_teardown_but_flush_first():
    """exit_now skips the interpreter's teardown, yet what sits in the buffers of a piped
    stdout and stderr still arrives, and the status is what sys.exit would give."""
    program = ("import json, sys; from seq2seq.cli import exit_now; print('out'); "
               "print('err', file=sys.stderr); exit_now(json.loads(sys.argv[1]))")
    buffered = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    for code, status in (("0", 0), ("2", 2), ("null", 0), ('"a message"', 1)):
        done = subprocess.run([sys.executable, "-c", program, code], capture_output=True,
                              text=True, cwd=ROOT, env=buffered)
        assert done.returncode == status
        assert done.stdout == "out\n"
        assert done.stderr.startswith("err\n")
        assert ("a message" in done.stderr) == (status == 1)


# ---- bad input ---------------------------------------------------------------------------

def test_parallel_files_with_different_line_counts(tmp_path):
    (tmp_path / "train.de").write_text("a\nb\nc\n", encoding="utf-8")
    (tmp_path / "train.en").write_text("x\ny\n", encoding="utf-8")
    config = tiny_config(tmp_path)
    result = run_cli("train", config, "--run-dir", tmp_path / "run", "--set",
                     f"data.train={tmp_path / 'train'}", "--set", "data.format=text",
                     "--set", "data.src=de", "--set", "data.trg=en")
    assert_user_error(result, "train.de has 3 lines", "train.en has 2")
    assert not (tmp_path / "run").exists()


def test_tsv_row_with_a_missing_column(tmp_path):
    config = tiny_config(tmp_path)
    with open(tmp_path / "train.tsv", "a", encoding="utf-8") as handle:
        handle.write("only one column\n")
    result = run_cli("train", config, "--run-dir", tmp_path / "run")
    assert_user_error(result, "train.tsv line 402", "expected at least 2")
    assert not (tmp_path / "run").exists()


def test_bytes_that_are_not_utf8(tmp_path):
    config = tiny_config(tmp_path)
    with open(tmp_path / "train.tsv", "ab") as handle:
        handle.write(b"caf\xe9\tcoffee\n")
    result = run_cli("train", config, "--run-dir", tmp_path / "run")
    assert_user_error(result, "train.tsv line 402", "not valid UTF-8")
    assert not (tmp_path / "run").exists()


def test_empty_training_set_after_filtering(tmp_path):
    config = tiny_config(tmp_path)
    (tmp_path / "train.tsv").write_text("src\ttrg\n\t\n  \tx\n", encoding="utf-8")
    result = run_cli("train", config, "--run-dir", tmp_path / "run")
    assert_user_error(result, "train.tsv line 2", "empty source", "data.bad_rows: skip")
    result = run_cli("train", config, "--run-dir", tmp_path / "run", "--set",
                     "data.bad_rows=skip")
    assert_user_error(result, "train.tsv", "no sentence pairs left")
    assert not (tmp_path / "run").exists()


def test_missing_data_file_and_missing_config(tmp_path):
    config = tiny_config(tmp_path)
    result = run_cli("train", config, "--run-dir", tmp_path / "run", "--set",
                     f"data.dev={tmp_path / 'nope.tsv'}")
    assert_user_error(result, "nope.tsv")
    assert not (tmp_path / "run").exists()
    assert_user_error(run_cli("train", tmp_path / "absent.yaml"), "config file not found")


@pytest.mark.parametrize("override,words", [
    ("model.encoder.celll=gru", ["model.encoder.celll", "valid:"]),
    ("model.decoder.attention=transformer", ["model.decoder.attention", "bahdanau"]),
    ("training.learning_rate=-1", ["training.learning_rate"]),
    ("training.batch_size=many", ["training.batch_size", "integer",
                                  "with --set training.batch_size=many"]),
    ("training.batch_tokens=-5", ["training.batch_tokens", ">= 0"]),
])
def test_bad_config_values(tmp_path, override, words):
    config = tiny_config(tmp_path)
    result = run_cli("train", config, "--run-dir", tmp_path / "run", "--set", override)
    assert_user_error(result, *words)
    assert not (tmp_path / "run").exists()


def test_missing_run_directory_and_missing_files(trained, tmp_path):
    assert_user_error(run_cli("translate", tmp_path / "nowhere", "1"), "run directory not found")
    assert_user_error(run_cli("evaluate", tmp_path / "nowhere"), "run directory not found")
    broken = tmp_path / "broken"
    broken.mkdir()
    assert_user_error(run_cli("translate", broken, "1"), "not a seq2seq run directory")
    for missing in ("model.safetensors", "joint.json", "config.yaml"):
        copy = tmp_path / f"without_{missing}"
        _copy_run(trained, copy)
        (copy / missing).unlink()
        assert_user_error(run_cli("translate", copy, "1"), missing.split(".")[0])


def test_run_directory_from_an_incompatible_version(trained, tmp_path):
    copy = tmp_path / "old"
    _copy_run(trained, copy)
    info = json.loads((copy / "run.json").read_text())
    (copy / "run.json").write_text(json.dumps({**info, "format_version": 99}))
    assert_user_error(run_cli("translate", copy, "1"), "format 99", "not supported")


def test_a_run_written_before_a_key_existed_loads_as_it_was_trained(trained, tmp_path):
    # Runs from before `attentional_output` existed squashed with tanh, whatever the default.
    copy = tmp_path / "older"
    _copy_run(trained, copy)
    config = yaml.safe_load((copy / "config.yaml").read_text())
    assert "attentional_output" in config["model"]["decoder"]  # new runs write every key
    del config["model"]["decoder"]["attentional_output"]
    (copy / "config.yaml").write_text(yaml.safe_dump(config))
    assert open_run(copy)[1].model.decoder.attentional_output == "tanh"


def test_weights_that_do_not_fit_the_config(trained, tmp_path):
    copy = tmp_path / "resized"
    _copy_run(trained, copy)
    config = yaml.safe_load((copy / "config.yaml").read_text())
    config["model"]["decoder"]["hidden_size"] = 48
    (copy / "config.yaml").write_text(yaml.safe_dump(config))
    assert_user_error(run_cli("translate", copy, "1"), "model.safetensors")


def test_resume_with_a_changed_model_config(tmp_path):
    config = tiny_config(tmp_path)
    run = tmp_path / "run"
    assert run_cli("train", config, "--run-dir", run, "-q", "--set",
                   "training.max_steps=12").exit_code == 0
    result = run_cli("train", config, "--run-dir", run, "--resume", "--set",
                     "model.decoder.hidden_size=64")
    assert_user_error(result, "--resume with a changed config", "model.decoder.hidden_size")
    # Changing how long to train is fine.
    result = run_cli("train", config, "--run-dir", run, "--resume", "-q", "--set",
                     "training.max_steps=18")
    assert result.exit_code == 0, result.output
    assert (run / "checkpoints" / "step_00000018").is_dir()


def test_resume_without_a_config_uses_the_runs_own(tmp_path):
    """A run trained with overrides resumes from its run directory alone; the CONFIG it was
    started from would undo them (and is refused, as a changed model)."""
    config = tiny_config(tmp_path)
    run = tmp_path / "run"
    assert run_cli("train", config, "--run-dir", run, "-q", "--set", "training.max_steps=12",
                   "--set", "model.decoder.attention=luong").exit_code == 0
    assert_user_error(run_cli("train", config, "--run-dir", run, "--resume"),
                      "model.decoder.attention differs", "leave CONFIG out")
    result = run_cli("train", "--run-dir", run, "--resume", "-q", "--set",
                     "training.max_steps=18")
    assert result.exit_code == 0, result.output
    assert (run / "checkpoints" / "step_00000018").is_dir()
    assert "attention: luong" in (run / "config.yaml").read_text()
    assert_user_error(run_cli("train", "--resume"), "--run-dir")
    assert_user_error(run_cli("train", "--run-dir", run), "CONFIG")
    assert_user_error(run_cli("train", "--resume", "--run-dir", tmp_path / "none"),
                      "no training run")


def test_existing_run_is_not_overwritten_by_accident(trained, tmp_path):
    config = tiny_config(tmp_path)
    assert_user_error(run_cli("train", config, "--run-dir", trained), "--resume", "--overwrite")
    assert (trained / "model.safetensors").is_file()


def test_bad_decoding_options_and_inputs(trained, tmp_path):
    assert_user_error(run_cli("translate", trained, "--beam-size", "0", "1"), "decoding.beam_size")
    assert_user_error(run_cli("translate", trained, "--n-best", "5", "--beam-size", "2", "1"),
                      "decoding.n_best")
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"1 2\n\xff\n")
    assert_user_error(run_cli("translate", trained, "--input", bad), "bad.txt line 2", "UTF-8")
    assert_user_error(run_cli("translate", trained, "--input", tmp_path / "none.txt"),
                      "file not found")
    assert_user_error(run_cli("translate", trained, "--input", bad, "1 2"), "both", "bad.txt")
    assert_user_error(run_cli("translate", trained, "--batch-tokens", "-5", "1"),
                      "decoding.batch_tokens")
    src, ref = tmp_path / "a.src", tmp_path / "a.ref"
    src.write_text("1\n2\n", encoding="utf-8")
    ref.write_text("1\n", encoding="utf-8")
    assert_user_error(run_cli("evaluate", trained, "--src", src, "--ref", ref),
                      "a.src has 2 lines", "a.ref has 1")
    assert_user_error(run_cli("evaluate", trained, "--src", src), "--src and --ref")
    assert_user_error(run_cli("evaluate", trained, "--split", "valid"), "--split")


def test_a_real_process_prints_no_traceback(tmp_path):
    """The installed entry point (not the in-process runner) keeps user errors to one line."""
    done = subprocess.run([sys.executable, str(ROOT / "cli.py"), "translate",
                           str(tmp_path / "nowhere"), "x"], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error:") and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def _copy_run(source: Path, target: Path) -> None:
    import shutil

    shutil.copytree(source, target, ignore=shutil.ignore_patterns("checkpoints", "eval", "best"))
