"""Open a trained run directory for inference: its task, config, tokenizers and weights.

Every inference object (Translator, Classifier, Generator) loads through here, so a missing
file, a run from another format version or a run of the wrong task is reported the same way.
"""

from __future__ import annotations

from pathlib import Path

from .config import Config
from .errors import UserError
from .export.folder import ExportFolder, is_export_dir
from .heads import head_of
from .run_directory import RunDirectory, load_run_config, tokenizer_names
from .tokenizers import Tokenizer, load_tokenizer


def open_run(run_dir: str | Path, task: str | None = None) -> tuple[RunDirectory, Config]:
    """Check ``run_dir`` is a readable run (of ``task``, if given); return it and its config."""
    run = RunDirectory(run_dir)
    info = run.read_run_info()
    found = str(info.get("task"))
    if task is not None and found != task:
        raise UserError(f"{run.path} holds a {head_of(found).model}, not a "
                        f"{head_of(task).model} (use `seq2seq {head_of(found).command}`)")
    return run, load_run_config(run)


def run_task(run_dir: str | Path) -> str:
    """The task a run directory was trained for (run.json says, and it is a known head's), or
    the head of an export folder (its manifest says)."""
    if is_export_dir(run_dir):
        return ExportFolder(run_dir).head
    return RunDirectory(run_dir).read_run_info()["task"]


def load_tokenizers(run: RunDirectory | ExportFolder, config: Config
                    ) -> tuple[Tokenizer, Tokenizer]:
    """(input, output) tokenizers; the same object when there is one vocabulary."""
    src_name, trg_name = tokenizer_names(config)
    src = load_tokenizer(run.path, src_name)
    return src, (src if trg_name == src_name else load_tokenizer(run.path, trg_name))


def save_tokenizers(run: RunDirectory, config: Config, src: Tokenizer, trg: Tokenizer) -> None:
    src_name, trg_name = tokenizer_names(config)
    src.save(run.path, src_name)
    if trg_name != src_name:
        trg.save(run.path, trg_name)


def weights_path(run: RunDirectory, weights: str | Path | None = None) -> Path:
    """``weights`` if given, else the run's model.safetensors; it must exist."""
    path = Path(weights) if weights else run.model_path
    if not path.is_file():
        if weights and path.is_dir() and (path / "model.safetensors").is_file():
            raise UserError(f"--checkpoint {path} is a checkpoint folder: give its "
                            f"weights file, {path / 'model.safetensors'}")
        if weights:
            raise UserError(f"weights file not found: {path}")
        raise UserError(f"{run.path}: no trained model yet ({path.name} is missing; "
                        "training writes it at the first validation)")
    return path
