"""``seq2seq train CONFIG``: train any head; the config's ``task`` says which."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from .. import __version__
from ..config import Config, check_settings_used, dump_config, load_config
from ..errors import UserError
from .app import DEVICE_HELP, app, console, user_errors

if TYPE_CHECKING:
    import torch

    from ..run_directory import RunDirectory
    from ..training.distributed import ProcessInfo
    from ..training.trainer import TrainingTask

# What --resume may change: when and how long to train, what to keep, where to run. Everything
# else fixes what the saved weights, tokenizers, optimizer state and schedule mean, or the
# path training takes from here; changing it would silently train something else.
RESUMABLE_TRAINING_KEYS = ("max_epochs", "max_steps", "max_minutes", "patience",
                           "validate_every", "checkpoint_every", "log_every", "keep_best",
                           "keep_last", "average_best", "device", "amp", "cpu_amp",
                           "num_threads", "max_nonfinite_updates")
RESUMABLE_DATA_KEYS = ("train", "dev", "test", "format", "header", "hub_name", "hub_config",
                       "dev_max_sentences")  # the files may move; what is read from them may not
RESUMABLE_SECTIONS = ("decoding", "generation", "evaluation")  # validation and inference only


@app.command()
@user_errors
def train(
    config_path: Optional[Path] = typer.Argument(
        None, metavar="[CONFIG]", help="Experiment YAML file [with --resume: the run's own]."),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", "-o",
                                           help="Where the run is written [runs/<name>]."),
    overrides: list[str] = typer.Option([], "--set", "-s", help="Override: section.key=value."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --run-dir."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run (it is "
                                   "deleted only once the new one is set up)."),
    device: Optional[str] = typer.Option(None, help=DEVICE_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Train a model from a YAML config (the task is named in the config)."""
    from ..run_directory import RunDirectory
    from ..runtime import configure_threads, seed_everything
    from ..training.distributed import ProcessInfo, process_device, process_group
    from ..training.trainer import Trainer, TrainingInterrupted

    if resume and overwrite:
        raise UserError("--resume continues a run and --overwrite replaces it: give one of them")
    if config_path is None:
        if not resume:
            raise UserError("give a CONFIG file to train (or --resume --run-dir RUN to continue "
                            "a run with its own config)")
        if run_dir is None:
            raise UserError("--resume without a CONFIG needs --run-dir RUN: the run to continue")
        config_path = RunDirectory(run_dir).config_path
        if not config_path.is_file():
            raise UserError(f"{run_dir}: no training run to resume (no config.yaml; a run "
                            "stopped before its set-up ended has none): start it again with "
                            f"seq2seq train CONFIG --run-dir {run_dir}")
    config = load_config(config_path, overrides)
    if not resume:  # (a run's own config.yaml lists every key, those of other heads unset)
        check_settings_used(config, str(config_path))
    if device:
        config.training.device = device
    run = RunDirectory(run_dir or Path("runs") / config.name)
    process = ProcessInfo.from_environment()
    console.quiet = not process.is_main  # rank 0 speaks for the job
    check_batch_for_processes(config, process)
    torch_device = process_device(config.training.device, process)
    if process.restart and run.has_training():  # torchrun restarted the job after a failure
        console.print(f"torchrun restart {process.restart}: resuming {run.path}")
        resume, overwrite = True, False
    with contextlib.ExitStack() as locks:  # released when the command ends, in any way
        locks.enter_context(process_group(process, torch_device))
        threads = configure_threads(config.training.num_threads, process.local_world_size)
        if 0 < threads < config.training.num_threads:
            console.print(f"training.num_threads {config.training.num_threads} lowered to "
                          f"{threads}: {process.local_world_size} processes share this "
                          "machine's cores")
        seed_everything(config.training.seed)
        console.print(f"seq2seq {__version__}: {config.task} '{config.name}' -> {run.path} "
                      f"on {torch_device} ({threads} thread{'s' if threads != 1 else ''}"
                      f"{f' x {process.world_size} processes' if process.distributed else ''})")
        # Rank 0 sets the run up (checks, tokenizers, config); the others then read it.
        failed: BaseException | None = None
        if process.is_main:
            try:
                task = set_up_run(config, run, resume, overwrite, torch_device, process, locks)
            except BaseException as err:
                failed = err
        if process.broadcast(failed is not None):
            if failed is not None:
                raise failed
            raise typer.Exit(2)  # rank 0 says why
        if not process.is_main:
            task = build_task(config, run, resume, torch_device, process)
        params = sum(p.numel() for p in task.model.parameters())
        console.print(f"model: {params:,} parameters")
        trainer = Trainer(task, config.training, run, torch_device, console, process,
                          show_progress=not quiet)
        if resume:
            trainer.resume()
        try:
            state = trainer.train()
        except TrainingInterrupted as stop:
            raise typer.Exit(128 + stop.signum) from None
    best = "none (no finite score)" if state.best_score is None else f"{state.best_score:.2f}"
    steps = f"{state.step} step{'s' if state.step != 1 else ''}"
    console.print(f"done: {steps} in {state.train_seconds / 60:.1f} min of training, best "
                  f"{config.training.early_stopping_metric} {best} at step {state.best_step}; "
                  f"model: {run.model_path}")


def check_batch_for_processes(config: Config, process: ProcessInfo) -> None:
    """Batches are global (split between the processes): each process needs a share."""
    t = config.training
    if process.distributed and t.batch_tokens <= 0 and t.batch_size < process.world_size:
        raise UserError(f"training.batch_size={t.batch_size} is the batch of all processes "
                        f"together; it cannot be shared by {process.world_size} processes")


def set_up_run(config: Config, run: RunDirectory, resume: bool, overwrite: bool,
               device: torch.device, process: ProcessInfo, locks: contextlib.ExitStack
               ) -> TrainingTask:
    """Check ``run`` may be written, lock it, build the task (data, tokenizers, model) and
    write the config: the run directory is ready to train. (Rank 0 only.)"""
    from ..files import atomic_write_text

    target, created = prepare_run_directory(run, resume, overwrite, process, locks)
    if resume:
        check_resumable(run, config)
    try:
        task = build_task(config, target, resume, device, process)
        if not resume:
            atomic_write_text(target.config_path, dump_config(config))
            if config.task == "translation":
                write_signature(target, config)
            target.write_run_info(config.task, __version__)  # last: marks the run as valid
    except BaseException:
        if created and not resume:  # never leave a half-made run directory behind
            shutil.rmtree(target.path, ignore_errors=True)
        raise
    if target is not run:  # everything checked and built: now the old run goes
        replace_run(run, target)
    if resume:
        atomic_write_text(run.config_path, dump_config(config))
    return task


def prepare_run_directory(run: RunDirectory, resume: bool, overwrite: bool,
                          process: ProcessInfo, locks: contextlib.ExitStack
                          ) -> tuple[RunDirectory, bool]:
    """Check ``run`` may be written, lock it, and return where the run is to be built (and
    whether that directory is new): ``run`` itself, or (--overwrite) a new directory beside it
    that replaces it once it is set up, so nothing of the old run is lost if the new one fails
    to start. The run directory has one
    writer: the lock is held until the command ends (the OS drops it even after kill -9), and
    a new run's lock moves with its directory when it replaces the old one."""
    target = run
    if resume:
        run.read_run_info()
    elif run.has_training():
        from ..run_directory import RunDirectory

        if not overwrite:
            run.lock().release()  # a run being trained: that error names the process
            raise UserError(f"{run.path} already holds a training run: pass --resume to "
                            "continue it or --overwrite to start again")
        run.check_replaceable()
        if process.is_main:  # nobody may train the old run while it is being replaced
            locks.callback(run.lock().release)
        remove_abandoned_builds(run)
        target = RunDirectory(run.path.parent / f".{run.path.name}.new-{os.getpid()}")
    elif run.path.is_file() or run.foreign_entries():
        raise UserError(f"{run.path} exists and is not a seq2seq run directory; choose "
                        "another --run-dir")
    created = not target.path.exists()
    target.path.mkdir(parents=True, exist_ok=True)
    if process.is_main:
        locks.callback(target.lock().release)
    return target, created


def remove_abandoned_builds(run: RunDirectory) -> None:
    """Delete replacement runs that a killed --overwrite left beside ``run`` (their lock is free)."""
    from ..run_directory import RunDirectory

    for path in run.path.parent.glob(f".{run.path.name}.new-*"):
        try:
            RunDirectory(path).lock().release()
        except UserError:
            continue  # another process is still building it
        shutil.rmtree(path, ignore_errors=True)


def replace_run(old: RunDirectory, new: RunDirectory) -> None:
    """Put the freshly built run ``new`` in the place of ``old`` with two renames: a process
    killed between them leaves the old run whole under a hidden name, never half of either."""
    aside = old.path.parent / f".{old.path.name}.old-{os.getpid()}"
    os.replace(old.path, aside)
    os.replace(new.path, old.path)
    shutil.rmtree(aside, ignore_errors=True)


def build_task(config: Config, run: RunDirectory, resume: bool, device: torch.device,
               process: ProcessInfo) -> TrainingTask:
    """The head's TrainingTask: loads the data, trains or loads the tokenizers, builds the model."""
    from ..heads import head_of

    return head_of(config.task).load("training").setup(config, run, resume, device, console,
                                                       process)


def check_resumable(run: RunDirectory, config: Config) -> None:
    """--resume must not change what the saved weights and tokenizers mean."""
    from ..run_directory import load_run_config

    saved, new = load_run_config(run).to_dict(), config.to_dict()
    may_change = ({"name"} | {f"training.{k}" for k in RESUMABLE_TRAINING_KEYS}
                  | {f"data.{k}" for k in RESUMABLE_DATA_KEYS})
    changed = [key for key in _diff(saved, new) if key not in may_change
               and not key.startswith(tuple(f"{s}." for s in RESUMABLE_SECTIONS))]
    if changed:
        verb = "differs" if len(changed) == 1 else "differ"
        raise UserError(f"--resume with a changed config: {', '.join(changed)} {verb} from "
                        f"{run.config_path} (a resumed run may change only when it stops, "
                        "what it keeps, where it runs, its data paths and its decoding); leave "
                        "CONFIG out to resume with the run's own, or start a new run")


def _diff(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key in old.keys() | new.keys():
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += _diff(a, b, f"{prefix}{key}.")
        elif a != b:
            keys.append(f"{prefix}{key}")
    return sorted(keys)


def write_signature(run: RunDirectory, config: Config) -> None:
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
