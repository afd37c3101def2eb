"""``seq2seq train CONFIG``: train any head; the config's ``task`` says which."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

import typer

from .. import __version__
from ..config import Config, dump_config, load_config
from ..errors import UserError
from .app import DEVICE_HELP, app, console, user_errors

# Settings a resumed run must keep: they fix what the saved weights and tokenizers mean.
COMPATIBLE_SECTIONS = ("tokenizer", "model")
COMPATIBLE_DATA_KEYS = ("src", "trg", "max_src_length", "max_trg_length", "text", "label",
                        "condition", "max_length", "truncation", "lm_mode", "bptt")


@app.command()
@user_errors
def train(
    config_path: Optional[Path] = typer.Argument(
        None, metavar="[CONFIG]", help="Experiment YAML file [with --resume: the run's own]."),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", "-o",
                                           help="Where the run is written [runs/<name>]."),
    overrides: list[str] = typer.Option([], "--set", "-s", help="Override: section.key=value."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --run-dir."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Delete an existing run first."),
    device: Optional[str] = typer.Option(None, help=DEVICE_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Train a model from a YAML config (the task is named in the config)."""
    from ..files import atomic_write_text
    from ..runtime import ProcessInfo, configure_threads, seed_everything, select_device
    from ..training.checkpoint import RunDirectory
    from ..training.trainer import Trainer

    if config_path is None:
        if not resume:
            raise UserError("give a CONFIG file to train (or --resume --run-dir RUN to continue "
                            "a run with its own config)")
        if run_dir is None:
            raise UserError("--resume without a CONFIG needs --run-dir RUN: the run to continue")
        config_path = RunDirectory(run_dir).config_path
        if not config_path.is_file():
            raise UserError(f"{run_dir}: no training run to resume (no config.yaml)")
    config = load_config(config_path, overrides)
    if device:
        config.training.device = device
    run = RunDirectory(run_dir or Path("runs") / config.name)
    process = ProcessInfo.from_environment()
    if resume:
        run.read_run_info()
        check_resumable(run, config)
    elif run.has_training():
        if not overwrite:
            raise UserError(f"{run.path} already holds a training run: pass --resume to continue "
                            "it or --overwrite to start again")
        shutil.rmtree(run.path)
    created = not run.path.exists()
    run.path.mkdir(parents=True, exist_ok=True)
    torch_device = select_device(config.training.device)
    threads = configure_threads(config.training.num_threads)
    seed_everything(config.training.seed)
    console.print(f"seq2seq {__version__}: {config.task} '{config.name}' -> {run.path} "
                  f"on {torch_device} ({threads} threads)")
    try:
        task = build_task(config, run, resume, torch_device, process)
        if not resume and process.is_main:
            atomic_write_text(run.config_path, dump_config(config))
            if config.task == "translation":
                write_signature(run, config)
            run.write_run_info(config.task, __version__)  # last: marks the run as valid
    except BaseException:
        if created and not resume:  # never leave a half-made run directory behind
            shutil.rmtree(run.path, ignore_errors=True)
        raise
    if resume:
        atomic_write_text(run.config_path, dump_config(config))
    params = sum(p.numel() for p in task.model.parameters())
    console.print(f"model: {params:,} parameters")
    trainer = Trainer(task, config.training, run, torch_device, console, process,
                      show_progress=not quiet)
    if resume:
        trainer.resume()
    state = trainer.train()
    console.print(f"done: {state.step} steps, best {config.training.early_stopping_metric} "
                  f"{state.best_score:.2f} at step {state.best_step}; model: {run.model_path}")


def build_task(config: Config, run, resume: bool, device, process):
    """The head's TrainingTask: loads the data, trains or loads the tokenizers, builds the model."""
    if config.task == "translation":
        from ..tasks.translation import TranslationTask as Task
    elif config.task == "classification":
        from ..tasks.classification import ClassificationTask as Task
    else:
        from ..tasks.language_model import LanguageModelTask as Task
    return Task.setup(config, run, resume, device, console, process)


def check_resumable(run, config: Config) -> None:
    """--resume must not change what the saved weights and tokenizers mean."""
    from ..pretrained import load_run_config

    saved, new = load_run_config(run).to_dict(), config.to_dict()
    changed = [f"{section}.{key}" for section in COMPATIBLE_SECTIONS
               for key in _diff(saved[section], new[section])]
    if saved["task"] != new["task"]:
        changed.append("task")
    changed += [f"data.{key}" for key in COMPATIBLE_DATA_KEYS if saved["data"][key] != new["data"][key]]
    if changed:
        verb = "differs" if len(changed) == 1 else "differ"
        raise UserError(f"--resume with a changed config: {', '.join(changed)} {verb} from "
                        f"{run.config_path}; leave CONFIG out to resume with the run's own, "
                        "or start a new run (--run-dir) to change them")


def _diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    keys = []
    for key in old.keys() | new.keys():
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += _diff(a, b, f"{prefix}{key}.")
        elif a != b:
            keys.append(f"{prefix}{key}")
    return sorted(keys)


def write_signature(run, config: Config) -> None:
    """Keep sacrebleu's signatures (metric settings + version) with the run."""
    from ..files import atomic_write_text
    from ..metrics.translation import score_translations

    e = config.evaluation
    scores = score_translations(["x"], ["x"], ("bleu", "chrf", "ter"), e.tokenize, e.lowercase)
    lines = [f"{name}: {score.signature}" for name, score in scores.items()]
    atomic_write_text(run.path / "sacrebleu_signature.txt", "\n".join(lines) + "\n")


@app.command()
def version() -> None:
    """Print the seq2seq version."""
    typer.echo(__version__)
