"""No lost data and no silently wrong result: run-directory safety, one writer, numerical
faults, damaged files, input/output alignment, and a one-line error for every user mistake.

Each test here failed before the behaviour it checks existed. The crash-and-resume harness
(signals at random moments) is in test_crash_resume.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from seq2seq.config import load_config
from seq2seq.errors import UserError
from seq2seq.run_directory import RunDirectory, load_weights, read_jsonl

from .cli_helpers import assert_user_error, run_cli
from .test_cli_translation import write_pairs

ROOT = Path(__file__).resolve().parents[1]


def translation_config(directory: Path, **training) -> Path:
    write_pairs(directory / "train.tsv", 200, seed=0)
    write_pairs(directory / "dev.tsv", 20, seed=1)
    raw = {
        "task": "translation", "name": "tiny",
        "data": {"train": str(directory / "train.tsv"), "dev": str(directory / "dev.tsv"),
                 "test": str(directory / "dev.tsv"), "max_src_length": 8},
        "tokenizer": {"kind": "word", "vocab_size": 20},
        "model": {"embedding_size": 8, "encoder": {"hidden_size": 8},
                  "decoder": {"hidden_size": 16}},
        "training": {"batch_size": 32, "max_steps": 12, "validate_every": 6, "log_every": 3,
                     "num_threads": 1, **training},
        "decoding": {"beam_size": 1},
    }
    path = directory / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished tiny run; tests that damage it work on a copy (``copy_run``)."""
    directory = tmp_path_factory.mktemp("reliability")
    config = translation_config(directory, keep_last=2)
    run = directory / "run"
    result = run_cli("train", config, "--run-dir", run, "-q")
    assert result.exit_code == 0, result.output
    return run


def copy_run(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    (copy / "train.lock").unlink(missing_ok=True)
    return copy


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


# ---- --overwrite never destroys what is not a finished-or-failed seq2seq run ------------------

def test_overwrite_refuses_a_directory_that_is_not_a_run(tmp_path):
    config = translation_config(tmp_path)
    target = tmp_path / "thesis"
    (target / "checkpoints").mkdir(parents=True)
    (target / "src").mkdir()
    (target / "src" / "thesis.tex").write_text("years of work")
    assert_user_error(run_cli("train", config, "--run-dir", target, "--overwrite"),
                      "not a seq2seq run directory")
    assert (target / "src" / "thesis.tex").read_text() == "years of work"


def test_overwrite_refuses_a_run_holding_foreign_files(trained, tmp_path):
    run = copy_run(trained, tmp_path)
    (run / "notes.txt").write_text("mine")
    assert_user_error(run_cli("train", translation_config(tmp_path), "--run-dir", run,
                              "--overwrite"), "notes.txt")
    assert (run / "notes.txt").is_file() and (run / "model.safetensors").is_file()


@pytest.mark.parametrize("mine", ["report/thesis.docx", "eval/train.tsv", "eval/test/notes.md",
                                  "best/keep.safetensors", "checkpoints/step_00000012/mine.pt",
                                  "diagnose/figures/photo.jpg"])
def test_overwrite_refuses_a_user_file_inside_the_runs_folders(trained, tmp_path, mine):
    run = copy_run(trained, tmp_path)
    (run / mine).parent.mkdir(parents=True, exist_ok=True)
    (run / mine).write_text("mine")
    assert_user_error(run_cli("train", translation_config(tmp_path), "--run-dir", run,
                              "--overwrite"), mine)
    assert (run / mine).read_text() == "mine"


def test_overwrite_replaces_what_evaluate_report_and_diagnose_wrote(trained, tmp_path):
    run = copy_run(trained, tmp_path)
    for command in (["evaluate", run, "--split", "test", "--report", run / "eval" / "rep"],
                    ["report", run], ["diagnose", run]):
        result = run_cli(*command)
        assert result.exit_code == 0, result.output
    for folder in ("eval", "report", "diagnose"):
        assert any(p.is_file() for p in (run / folder).rglob("*")), folder
    result = run_cli("train", translation_config(tmp_path), "--run-dir", run, "--overwrite",
                     "-q", "--set", "training.max_steps=3")
    assert result.exit_code == 0, result.output
    assert not (run / "report").exists() and not (run / "eval").exists()


def test_resume_and_overwrite_together_are_refused(trained, tmp_path):
    run = copy_run(trained, tmp_path)
    before = weights(run / "model.safetensors")
    assert_user_error(run_cli("train", translation_config(tmp_path), "--run-dir", run,
                              "--resume", "--overwrite"), "--resume", "--overwrite")
    assert weights(run / "model.safetensors").keys() == before.keys()
    assert all(torch.equal(weights(run / "model.safetensors")[k], v) for k, v in before.items())


def test_a_failed_overwrite_keeps_the_old_run_and_a_good_one_replaces_it(trained, tmp_path):
    run = copy_run(trained, tmp_path)
    before = weights(run / "model.safetensors")
    config = translation_config(tmp_path)
    assert_user_error(run_cli("train", config, "--run-dir", run, "--overwrite",
                              "--set", "data.train=/nonexistent.tsv"), "not found")
    assert_user_error(run_cli("train", config, "--run-dir", run, "--overwrite",
                              "--set", "model.encoder.cell=bogus"), "model.encoder.cell")
    for name, value in weights(run / "model.safetensors").items():
        assert torch.equal(value, before[name])
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    result = run_cli("train", config, "--run-dir", run, "--overwrite", "-q",
                     "--set", "training.max_steps=6", "--set", "training.validate_every=3")
    assert result.exit_code == 0, result.output
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step_00000006"]
    assert "max_steps: 6" in (run / "config.yaml").read_text()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_plain_train_refuses_a_foreign_directory(tmp_path):
    target = tmp_path / "mine"
    target.mkdir()
    (target / "data.csv").write_text("x")
    assert_user_error(run_cli("train", translation_config(tmp_path), "--run-dir", target),
                      "not a seq2seq run directory")


# ---- one writer ---------------------------------------------------------------------------

def test_a_run_being_trained_cannot_be_trained_again_but_can_be_read(trained, tmp_path):
    run = copy_run(trained, tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from seq2seq.run_directory import "
         "RunLock; RunLock(sys.argv[1]).acquire(); print('locked', flush=True); time.sleep(60)",
         str(run)], stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "locked"
        config = translation_config(tmp_path, max_steps=18)
        for args in (["--resume"], ["--overwrite"], []):
            error = assert_user_error(run_cli("train", config, "--run-dir", run, *args),
                                      "being trained by another process")
            assert f"pid {holder.pid}" in error
        result = run_cli("translate", run, "1 2 3")
        assert result.exit_code == 0, result.output
    finally:
        holder.kill()
        holder.wait()
    # The lock died with its holder (as after kill -9): training may go on.
    result = run_cli("train", translation_config(tmp_path, max_steps=18), "--run-dir", run,
                     "--resume", "-q")
    assert result.exit_code == 0, result.output


# ---- numerical faults -----------------------------------------------------------------------

def test_a_diverging_run_stops_with_an_error_and_never_writes_nan_weights(tmp_path):
    config = translation_config(tmp_path, max_steps=40, validate_every=2)
    run = tmp_path / "run"
    result = run_cli("train", config, "--run-dir", run, "-q", "--set",
                     "training.learning_rate=1e6", "--set", "training.optimizer=sgd",
                     "--set", "training.clip_grad_norm=0")
    error = assert_user_error(result, "non-finite", "learning_rate")
    assert "new best" not in result.output.split(error)[-1] or "nan" not in result.output
    for path in run.rglob("*.safetensors"):
        for name, value in weights(path).items():
            assert torch.isfinite(value).all(), (path, name)


def test_non_finite_updates_are_skipped_and_counted(tmp_path, monkeypatch):
    """A NaN loss at two steps skips exactly those updates; training goes on."""
    from seq2seq.tasks.translation import TranslationTask

    real_loss = TranslationTask.loss

    def flaky_loss(self, batch, step):
        loss, nll, count = real_loss(self, batch, step)
        return (loss * float("nan"), nll, count) if step in (2, 3) else (loss, nll, count)

    monkeypatch.setattr(TranslationTask, "loss", flaky_loss)
    run = tmp_path / "run"
    result = run_cli("train", translation_config(tmp_path), "--run-dir", run)
    assert result.exit_code == 0, result.output
    assert "update skipped (2 in a row, 2 in all)" in result.output
    state = json.loads((run / "checkpoints/step_00000012/trainer.json").read_text())
    assert state["skipped_updates"] == 2 and state["nonfinite_in_a_row"] == 0


def test_a_non_finite_score_is_never_the_best(tmp_path):
    run = RunDirectory(tmp_path)
    model = torch.nn.Linear(2, 2)
    assert run.update_best(1, 0.5, False, model, keep_best=2)
    assert not run.update_best(2, float("nan"), False, model, keep_best=2)
    assert [e["step"] for e in run.best_index()] == [1]


@pytest.mark.parametrize("bad", ["nan", "int64"])
def test_weights_that_are_not_finite_floats_are_refused(tmp_path, bad):
    model = torch.nn.Linear(2, 2)
    tensors = {k: v.clone() for k, v in model.state_dict().items()}
    if bad == "nan":
        tensors["weight"][0, 0] = float("nan")
    else:
        tensors["weight"] = tensors["weight"].long()
    save_file(tensors, str(tmp_path / "w.safetensors"))
    with pytest.raises(Exception) as caught:
        load_weights(model, tmp_path / "w.safetensors")
    assert "weight" in str(caught.value) and ("non-finite" in str(caught.value)
                                             or "int64" in str(caught.value))


# ---- configuration: every value checked, and resume only changes what it may ----------------

@pytest.mark.parametrize("override, key", [
    ("training.learning_rate=.inf", "training.learning_rate"),
    ("training.weight_decay=-1", "training.weight_decay"),
    ("training.adam_betas=[2,3]", "training.adam_betas"),
    ("data.dev_max_sentences=-1", "data.dev_max_sentences"),
    ("training.seed=-1", "training.seed"),
    ("evaluation.tokenize=bogus", "evaluation.tokenize"),
    ("training.max_steps=-1", "training.max_steps"),
    ("training.max_minutes=-1", "training.max_minutes"),
    ("training.patience=-1", "training.patience"),
    ("training.decay_factor=5", "training.decay_factor"),
    ("training.min_learning_rate=-1", "training.min_learning_rate"),
    ("training.warmup_steps=-10", "training.warmup_steps"),
    ("training.validate_every=-5", "training.validate_every"),
    ("training.checkpoint_every=-3", "training.checkpoint_every"),
    ("decoding.min_length=-5", "decoding.min_length"),
    ("decoding.max_length_extra=-100", "decoding.max_length_extra"),
    ("decoding.length_penalty=.nan", "decoding.length_penalty"),
])
def test_nonsense_values_are_refused_before_anything_is_written(tmp_path, override, key):
    run = tmp_path / "run"
    assert_user_error(run_cli("train", translation_config(tmp_path), "--run-dir", run,
                              "--set", override), key)
    assert not run.exists()


def test_resume_refuses_changed_training_keys_and_config_says_what_ran(trained, tmp_path):
    run = copy_run(trained, tmp_path)
    config = translation_config(tmp_path)
    error = assert_user_error(run_cli("train", config, "--run-dir", run, "--resume", "--set",
                                      "training.learning_rate=0.05", "--set",
                                      "training.scheduler=exponential"), "--resume")
    assert "training.learning_rate" in error and "training.scheduler" in error
    assert "learning_rate: 0.001" in (run / "config.yaml").read_text()


def test_resume_of_a_run_killed_before_its_first_checkpoint_starts_it_again(trained, tmp_path):
    run = copy_run(trained, tmp_path)
    shutil.rmtree(run / "checkpoints")  # as if killed after set-up, before step 6
    (run / "metrics.jsonl").write_text('{"type": "train", "step": 3, "loss": 9.0}\n')
    result = run_cli("train", "--run-dir", run, "--resume", "-q")
    assert result.exit_code == 0, result.output
    assert "starts again from step 0" in result.output
    for name, value in weights(trained / "checkpoints/step_00000012/model.safetensors").items():
        assert torch.equal(value, weights(run / "checkpoints/step_00000012/model.safetensors")[name])
    assert [r["step"] for r in read_jsonl(run / "metrics.jsonl")] == \
        [r["step"] for r in read_jsonl(trained / "metrics.jsonl")]


# ---- damaged files: one line naming the file, and fallbacks where there is something to fall back to

def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(trained, tmp_path):
    run = copy_run(trained, tmp_path)
    newest = run / "checkpoints/step_00000012"
    (newest / "state.pt").write_bytes((newest / "state.pt").read_bytes()[:100])  # truncated
    result = run_cli("train", "--run-dir", run, "--resume", "-q")
    assert result.exit_code == 0, result.output
    assert "resuming from the previous checkpoint" in result.output
    assert "resumed from step 6" in result.output
    for name, value in weights(trained / "checkpoints/step_00000012/model.safetensors").items():
        assert torch.equal(value, weights(newest / "model.safetensors")[name])


@pytest.mark.parametrize("damage, words", [
    ("truncated_state", "state.pt"),
    ("pickle_state", "not a valid seq2seq checkpoint"),
    ("truncated_trainer", "trainer.json"),
    ("unknown_trainer_key", "trainer.json"),
])
def test_damaged_checkpoints_are_one_line_errors(trained, tmp_path, damage, words):
    run = copy_run(trained, tmp_path)
    for checkpoint in (run / "checkpoints").iterdir():
        state, trainer = checkpoint / "state.pt", checkpoint / "trainer.json"
        if damage == "truncated_state":
            state.write_bytes(state.read_bytes()[:50])
        elif damage == "pickle_state":
            torch.save({"optimizer": object.__new__(Exploit)}, state)
        elif damage == "truncated_trainer":
            trainer.write_text(trainer.read_text()[:10])
        else:
            trainer.write_text(json.dumps({**json.loads(trainer.read_text()), "surprise": 1}))
    result = run_cli("train", "--run-dir", run, "--resume")
    error = assert_user_error(result, "cannot resume", words)
    assert "weights_only" not in error and len(result.output.splitlines()) < 7


class Exploit:
    """Stands for a pickled object that would run code when unpickled."""

    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_damaged_run_files_are_one_line_errors(trained, tmp_path):
    run = copy_run(trained, tmp_path)
    (run / "best" / "index.json").write_text('[{"step": "x"}]')
    assert_user_error(run_cli("train", "--run-dir", run, "--resume"), "index.json")
    run = copy_run(trained, tmp_path / "b")
    (run / "run.json").write_text('"a string"')
    assert_user_error(run_cli("translate", run, "1 2"), "run.json", "JSON object")
    run = copy_run(trained, tmp_path / "c")
    (run / "config.yaml").write_bytes(b"task: \xff\xfe\n")
    assert_user_error(run_cli("translate", run, "1 2"), "config.yaml", "UTF-8")


def test_a_partial_last_metrics_line_is_dropped_on_resume_and_in_reports(trained, tmp_path):
    run = copy_run(trained, tmp_path)
    with open(run / "metrics.jsonl", "a") as handle:
        handle.write('{"type": "train", "st')  # killed while appending
    result = run_cli("report", run, "--output", tmp_path / "report")
    assert result.exit_code == 0, result.output
    result = run_cli("train", "--run-dir", run, "--resume", "-q", "--set", "training.max_steps=18")
    assert result.exit_code == 0, result.output
    steps = [r["step"] for r in read_jsonl(run / "metrics.jsonl") if r["type"] == "valid"]
    assert steps == [6, 12, 18]


def test_resume_cleans_temporaries_and_logs_each_validation_once(trained, tmp_path):
    run = copy_run(trained, tmp_path)
    leftovers = [run / "best" / ".step_00000012.safetensors.abc.tmp",
                 run / ".model.safetensors.x.tmp"]
    for path in leftovers:
        path.write_bytes(b"half")
    (run / "checkpoints" / ".partial_xyz").mkdir()
    # As if killed after step 12's validation was logged but before its checkpoint landed:
    shutil.rmtree(run / "checkpoints" / "step_00000012")
    result = run_cli("train", "--run-dir", run, "--resume", "-q")
    assert result.exit_code == 0, result.output
    assert not any(path.exists() for path in leftovers)
    assert not (run / "checkpoints" / ".partial_xyz").exists()
    log = (run / "validation.log").read_text()
    assert log.count("Validation at step 6 ") == 1 and log.count("Validation at step 12 ") == 1
    untimed = lambda text: re.sub(r"\[[0-9.]+ s\]", "", text)  # noqa: E731
    assert untimed(log) == untimed((trained / "validation.log").read_text())


# ---- permissions --------------------------------------------------------------------------------

def test_run_files_get_ordinary_permissions(trained):
    for path in [trained, *trained.rglob("*")]:
        if path.name == "train.lock":
            continue
        mode = stat.S_IMODE(path.stat().st_mode)
        expected = 0o777 if path.is_dir() else 0o666
        assert mode == expected & ~current_umask(), (path, oct(mode))


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# ---- inputs and outputs ---------------------------------------------------------------------------

def test_output_line_i_answers_input_line_i_on_stdin(trained, tmp_path):
    text = "1 2\u2028 3\n4\x1c5\n6\x0c7\r\n8\x85 9\n"
    from_stdin = run_cli("translate", trained, input=text)
    assert from_stdin.exit_code == 0, from_stdin.output
    path = tmp_path / "in.txt"
    path.write_text(text, encoding="utf-8", newline="")
    from_file = run_cli("translate", trained, "--input", path)
    assert len(from_file.stdout.splitlines()) == 4
    assert from_stdin.stdout == from_file.stdout


def test_output_locations_are_checked_before_the_work(trained, tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert_user_error(run_cli("evaluate", trained, "--output-dir", a_file), "--output-dir",
                      "not a folder")
    (tmp_path / "folder").mkdir()
    assert_user_error(run_cli("translate", trained, "1 2", "--output", tmp_path / "folder"),
                      "--output", "folder")
    assert_user_error(run_cli("translate", trained, "1 2", "--output", a_file / "x.txt"),
                      "--output", "is a file")
    assert_user_error(run_cli("evaluate", trained, "--src", tmp_path / "e", "--ref",
                              tmp_path / "e"), "not found")
    (tmp_path / "empty.txt").write_text("")
    assert_user_error(run_cli("evaluate", trained, "--src", tmp_path / "empty.txt", "--ref",
                              tmp_path / "empty.txt"), "no sentences")
    (tmp_path / "header.tsv").write_text("src\ttrg\n")
    assert_user_error(run_cli("evaluate", trained, "--data", tmp_path / "header.tsv"),
                      "no sentences")
    assert_user_error(run_cli("evaluate", trained, "--batch-size", "0"), "--batch-size")


def test_the_input_file_is_never_the_output(trained, tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("1 2\n3 4\n")
    (tmp_path / "link.txt").symlink_to(source)
    for output in (source, tmp_path / "link.txt", tmp_path / "." / "in.txt"):
        assert_user_error(run_cli("translate", trained, "--input", source, "--output", output),
                          "--output", "is the --input file")
    assert source.read_text() == "1 2\n3 4\n"


def test_an_unwritable_location_is_a_one_line_error(trained, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "out.txt"))

    monkeypatch.setattr("seq2seq.files.atomic_path", refuse)
    assert_user_error(run_cli("translate", trained, "1 2", "--output", tmp_path / "out.txt"),
                      "out.txt", "Permission denied")


def test_a_csv_row_with_more_fields_than_the_header_is_an_error(tmp_path):
    from seq2seq.data.translation import load_training_pairs

    path = tmp_path / "pairs.csv"
    path.write_text("src,trg\nHola,Hello\nHola, amigo,Hello friend\n", encoding="utf-8")
    config = load_config(translation_config(tmp_path), [f"data.train={path}"]).data
    with pytest.raises(Exception) as caught:
        load_training_pairs(config)
    assert "line 3" in str(caught.value) and "quoted" in str(caught.value)


def test_a_training_pair_with_an_empty_side_is_an_error_or_skipped_and_counted(tmp_path):
    from seq2seq.data.translation import load_training_pairs

    path = tmp_path / "pairs.tsv"
    path.write_text("src\ttrg\nHola\tHello\n\tHi\nAdios\tBye\nSi\t \n", encoding="utf-8")
    config = load_config(translation_config(tmp_path), [f"data.train={path}"]).data
    with pytest.raises(UserError, match=r"pairs.tsv line 3: empty source .*data.bad_rows: skip"):
        load_training_pairs(config)
    config.bad_rows = "skip"
    texts, skipped = load_training_pairs(config)
    assert skipped == 2 and texts["src"] == ["Hola", "Adios"] and texts["trg"] == ["Hello", "Bye"]
    path.write_text("src\ttrg\nHola\tHello\nSi\t \n", encoding="utf-8")
    config.bad_rows = "error"
    with pytest.raises(UserError, match=r"pairs.tsv line 3: empty target \(data.trg: 'trg'\)"):
        load_training_pairs(config)


def test_several_processes_without_torchrun_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    run = tmp_path / "run"
    assert_user_error(run_cli("train", translation_config(tmp_path), "--run-dir", run),
                      "WORLD_SIZE=2", "torchrun")
    assert not run.exists()
