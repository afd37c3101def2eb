"""The run directory: what a training run leaves on disk, written so that no crash corrupts it.

    RUN_DIR/
      run.json              format version, task, seq2seq version
      config.yaml           the resolved config the run was trained with
      <side>.model|.json    tokenizer files (``joint`` or ``src`` + ``trg``; ``text``)
      labels.json | conditions.json   a classifier's labels, a conditioned LM's conditions
      model.safetensors     the model to use: best so far (or the average of the k best)
      best/step_N.safetensors   the k best checkpoints (+ best/index.json)
      checkpoints/step_N/   resumable: model.safetensors, state.pt, trainer.json
      metrics.jsonl         one JSON row per training log interval and per validation
      validation.log        human-readable validation reports
      train.lock            held (an OS file lock) by the one process training the run

Every file is written to a temporary name and renamed into place; a resumable checkpoint is a
directory renamed into place as a whole, so a run killed at any moment leaves either the
previous checkpoint or the new one, never half of one. Nothing is ever unpickled on load:
weights are safetensors, optimizer state is loaded with ``torch.load(weights_only=True)``.
Every file read back is checked, and a damaged one is a one-line :class:`UserError` naming it.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml
from safetensors.torch import load_file, save_model

from .config import Config, config_from_dict
from .errors import UserError
from .files import (
    OUTPUT_FILES,
    atomic_directory,
    atomic_path,
    atomic_write_text,
    current_umask,
    foreign_entries,
    remove_temporaries,
)
from .heads import head_of

if TYPE_CHECKING:
    from .export.folder import ExportFolder

FORMAT_VERSION = 1
RUN_FILE = "run.json"
CONFIG_FILE = "config.yaml"
MODEL_FILE = "model.safetensors"
LOCK_FILE = "train.lock"
LABELS_FILE = "labels.json"  # a classifier's label names
CONDITIONS_FILE = "conditions.json"  # what a conditioned language model is conditioned on
TEXT_TOKENIZER = "text"  # the one tokenizer of a classifier or language model (a translator:
                         # "joint", or "src" + "trg")
# What seq2seq itself writes into a run directory; --overwrite refuses a directory holding
# anything else (``eval``, ``report`` and ``diagnose`` are written by those commands).
RUN_ENTRIES = re.compile(
    r"(run\.json|config\.yaml|model\.safetensors|metrics\.jsonl|validation\.log|"
    r"sacrebleu_signature\.txt|labels\.json|conditions\.json|train\.lock|"
    r"(joint|src|trg|text)\.(json|model)|best|checkpoints|eval|report|diagnose|"
    r"\..*\.tmp|\.partial_.*)")
# ... and inside its folders (``eval``, ``report`` and ``diagnose`` by OUTPUT_FILES)
RUN_FOLDERS = {"best": re.compile(r"index\.json|step_\d+\.safetensors"),
               "checkpoints": re.compile(r"step_\d+/(model\.safetensors|state\.pt|trainer\.json)"),
               "eval": OUTPUT_FILES, "report": OUTPUT_FILES, "diagnose": OUTPUT_FILES}


def save_weights(model: torch.nn.Module, path: Path) -> None:
    """Model weights -> safetensors, atomically (tied weights are stored once). Weights that
    are not finite (a diverged run) are never written as a model."""
    bad = next((name for name, value in model.state_dict().items()
                if value.is_floating_point() and not bool(torch.isfinite(value).all())), None)
    if bad is not None:
        raise UserError(f"not writing {path}: the model's weights are not finite ({bad}); "
                        "training diverged: lower training.learning_rate or set "
                        "training.clip_grad_norm")
    with atomic_path(path) as tmp:
        save_model(model, str(tmp))


def load_weights(model: torch.nn.Module, path: Path) -> None:
    """Load safetensors weights into ``model``; a mismatch is a UserError naming the file."""
    if not path.is_file():
        raise UserError(f"missing model weights: {path}")
    try:
        tensors = load_file(str(path), device="cpu")
    except Exception as err:  # safetensors raises its own error types for corrupt files
        raise UserError(f"{path}: not a readable safetensors file ({err})") from None
    own = model.state_dict()
    # Tied parameters are saved under one name only; fill the others from their twin.
    for name, value in own.items():
        if name not in tensors:
            twin = next((k for k, v in own.items()
                         if k in tensors and v.data_ptr() == value.data_ptr()), None)
            if twin is not None:
                tensors[name] = tensors[twin]
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    if missing or unexpected:
        raise UserError(f"{path}: weights do not fit this model (missing: {missing[:3]}, "
                        f"unexpected: {unexpected[:3]}); was it trained with another config?")
    for name, value in tensors.items():
        expected = own[name]
        if value.shape != expected.shape:
            raise UserError(f"{path}: {name} has shape {tuple(value.shape)}, the config expects "
                            f"{tuple(expected.shape)}")
        if value.is_floating_point() != expected.is_floating_point():
            raise UserError(f"{path}: {name} holds {value.dtype}, the model expects "
                            f"{expected.dtype}")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise UserError(f"{path}: {name} holds non-finite values (NaN or inf); these "
                            "weights come from a diverged run")
    model.load_state_dict(tensors, strict=True)


def average_weights(paths: list[Path]) -> dict[str, torch.Tensor]:
    """Element-wise mean of several safetensors checkpoints (checkpoint averaging)."""
    total: dict[str, torch.Tensor] = {}
    for path in paths:
        for name, value in load_file(str(path), device="cpu").items():
            total[name] = total.get(name, 0) + value.double()
    return {name: (value / len(paths)).float() for name, value in total.items()}


def read_json(path: Path, expected: type, what: str = "") -> Any:
    """Parse a JSON file this project wrote; anything unreadable is a UserError naming it."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"missing {path}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not valid UTF-8") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON (line {err.lineno}: {err.msg})") from None
    if not isinstance(value, expected):
        raise UserError(f"{path}: expected a JSON {_json_kind(expected)}{what}, "
                        f"got {_json_kind(type(value))}")
    return value


def _json_kind(kind: type) -> str:
    return {dict: "object", list: "array", str: "string", int: "number", float: "number",
            bool: "true/false"}.get(kind, "null" if kind is type(None) else kind.__name__)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSON Lines log. A partial last line (a process killed while appending) is
    dropped; a damaged line elsewhere is a UserError naming it."""
    try:
        lines = Path(path).read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not valid UTF-8") from None
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):  # the last line, never terminated: an interrupted append
                break
            raise UserError(f"{path} line {number}: not valid JSON") from None
        if not isinstance(row, dict):
            raise UserError(f"{path} line {number}: expected a JSON object")
        rows.append(row)
    return rows


class RunLock:
    """The exclusive right to train a run directory: an OS lock on ``train.lock``, which the
    kernel releases when the process ends in any way (so a ``kill -9`` leaves no stale lock).
    Reading a run (translate, evaluate) never takes it."""

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666 & ~current_umask())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise UserError(f"{self.path.parent} is being trained by another process "
                            f"(pid {holder}, holding {self.path}); wait for it to finish or "
                            "stop it first") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the lock
            self._fd = None


class RunDirectory:
    """Paths and safe reads/writes for one run directory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    # ---- paths ----
    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def validation_log(self) -> Path:
        return self.path / "validation.log"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def best_dir(self) -> Path:
        return self.path / "best"

    # ---- identity ----
    def write_run_info(self, task: str, version: str) -> None:
        info = {"format_version": FORMAT_VERSION, "task": task, "seq2seq_version": version}
        atomic_write_text(self.path / RUN_FILE, json.dumps(info, indent=1) + "\n")

    def read_run_info(self) -> dict[str, Any]:
        """Check this is a run directory this version can read; return run.json."""
        if not self.path.is_dir():
            raise UserError(f"run directory not found: {self.path}")
        info_path = self.path / RUN_FILE
        if not info_path.is_file():
            raise UserError(f"{self.path} is not a seq2seq run directory (no {RUN_FILE})")
        info = read_json(info_path, dict)
        version = info.get("format_version")
        if version != FORMAT_VERSION:
            raise UserError(f"{self.path}: run directory format {version!r} is not supported by "
                            f"this seq2seq (reads format {FORMAT_VERSION})")
        head_of(str(info.get("task")), str(info_path))  # a task this version knows
        if not self.config_path.is_file():
            raise UserError(f"{self.path}: missing {CONFIG_FILE}")
        return info

    def has_training(self) -> bool:
        return (self.path / RUN_FILE).exists() or self.checkpoints.exists()

    def foreign_entries(self) -> list[str]:
        """Paths in the directory, at any depth, that seq2seq does not write (a user's own
        files, which --overwrite must not delete)."""
        if not self.path.is_dir():
            return []
        return foreign_entries(self.path, RUN_ENTRIES, RUN_FOLDERS)

    def check_replaceable(self) -> None:
        """--overwrite deletes this directory: it must be a seq2seq run and nothing else."""
        if self.path.is_symlink() or not self.path.is_dir():
            raise UserError(f"--overwrite: {self.path} is not a directory")
        self.read_run_info()
        foreign = self.foreign_entries()
        if foreign:
            shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
            raise UserError(f"--overwrite: {self.path} holds files seq2seq did not write "
                            f"({shown}); move them away or choose another --run-dir")

    def lock(self) -> RunLock:
        """Take the run's training lock (a UserError naming the holder if it is taken)."""
        self.path.mkdir(parents=True, exist_ok=True)
        return RunLock(self.path).acquire()

    def remove_temporaries(self) -> list[Path]:
        """Delete the temporary files a process killed in the middle of a write left behind."""
        removed = []
        for directory in (self.path, self.best_dir, self.checkpoints):
            removed += remove_temporaries(directory)
        return removed

    def reset_progress(self) -> None:
        """Forget what a run that never reached a checkpoint logged (it starts again)."""
        for path in (self.metrics_path, self.validation_log, self.model_path):
            path.unlink(missing_ok=True)
        shutil.rmtree(self.best_dir, ignore_errors=True)

    # ---- resumable checkpoints ----
    def save_checkpoint(self, step: int, model: torch.nn.Module, torch_state: dict[str, Any],
                        trainer_state: dict[str, Any], keep_last: int) -> Path:
        """Write checkpoints/step_N/ as a whole (temporary directory + rename)."""
        final = self.checkpoints / f"step_{step:08d}"
        with atomic_directory(final) as tmp:
            save_weights(model, tmp / MODEL_FILE)
            torch.save(torch_state, tmp / "state.pt")
            (tmp / "trainer.json").write_text(json.dumps(trainer_state), encoding="utf-8")
        for old in self.list_checkpoints()[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def list_checkpoints(self) -> list[Path]:
        """Complete resumable checkpoints, oldest first."""
        if not self.checkpoints.is_dir():
            return []
        return sorted(p for p in self.checkpoints.glob("step_*") if (p / "trainer.json").is_file())

    def load_checkpoint(self, model: torch.nn.Module, trainer_keys: set[str],
                        notes: list[str] | None = None) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """Load the newest readable checkpoint's weights into ``model``; return (torch state:
        optimizer, schedule, RNG; trainer state), or None when there is no checkpoint yet.
        A damaged newest checkpoint falls back to the one before it (a note says so)."""
        found = self.list_checkpoints()
        if not found:
            return None
        for position, path in enumerate(reversed(found)):
            try:
                return self._read_checkpoint(path, model, trainer_keys)
            except UserError as err:
                if position == len(found) - 1:
                    older = "" if len(found) == 1 else " (nor is any older one)"
                    raise UserError(f"cannot resume: {err}{older}") from None
                if notes is not None:
                    notes.append(f"{err}; resuming from the previous checkpoint instead")
        raise AssertionError("unreachable")

    def _read_checkpoint(self, path: Path, model: torch.nn.Module,
                         trainer_keys: set[str]) -> tuple[dict[str, Any], dict[str, Any]]:
        trainer_state = read_json(path / "trainer.json", dict)
        unknown = sorted(set(trainer_state) - trainer_keys)
        if unknown or not all(isinstance(v, (int, float, type(None)))
                              for v in trainer_state.values()):
            raise UserError(f"{path / 'trainer.json'}: not a trainer state of this seq2seq "
                            f"(unknown or non-numeric keys: {', '.join(unknown) or 'values'})")
        load_weights(model, path / MODEL_FILE)
        try:
            torch_state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise UserError(f"missing {path / 'state.pt'}") from None
        except Exception:  # truncated, or a pickle that would run code: either way, refused
            raise UserError(f"{path / 'state.pt'}: not a valid seq2seq checkpoint (damaged, or "
                            "holds objects other than tensors and numbers)") from None
        if not isinstance(torch_state, dict) or not {"optimizer", "schedule", "rng"} <= set(torch_state):
            raise UserError(f"{path / 'state.pt'}: not a valid seq2seq checkpoint (no optimizer, "
                            "schedule and RNG state)")
        return torch_state, trainer_state

    # ---- best checkpoints ----
    def update_best(self, step: int, score: float, higher_is_better: bool,
                    model: torch.nn.Module, keep_best: int) -> bool:
        """Record this validation; keep the ``keep_best`` best weights. True if it is the new best.
        A score that is not finite is never recorded."""
        if not math.isfinite(score):
            return False
        index_path = self.best_dir / "index.json"
        index = self.best_index()
        index = [e for e in index if e["step"] != step] + [{"step": step, "score": score}]
        index.sort(key=lambda e: e["score"], reverse=higher_is_better)
        kept, dropped = index[:keep_best], index[keep_best:]
        is_best = kept[0]["step"] == step
        if any(e["step"] == step for e in kept):
            save_weights(model, self.best_dir / f"step_{step:08d}.safetensors")
        atomic_write_text(index_path, json.dumps(kept, indent=1))
        for entry in dropped:
            (self.best_dir / f"step_{entry['step']:08d}.safetensors").unlink(missing_ok=True)
        if is_best:
            save_weights(model, self.model_path)
        return is_best

    def best_index(self) -> list[dict[str, Any]]:
        path = self.best_dir / "index.json"
        if not path.is_file():
            return []
        index = read_json(path, list)
        for entry in index:
            if not (isinstance(entry, dict) and isinstance(entry.get("step"), int)
                    and isinstance(entry.get("score"), (int, float))):
                raise UserError(f"{path}: expected a list of {{\"step\": N, \"score\": X}} "
                                f"entries, got {json.dumps(entry)[:60]}")
        return index

    def best_paths(self, k: int) -> list[Path]:
        return [self.best_dir / f"step_{e['step']:08d}.safetensors" for e in self.best_index()[:k]]

    # ---- logs ----
    def append_metrics(self, row: dict[str, Any]) -> None:
        with open(self.metrics_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        """The rows of metrics.jsonl (none if there is no file yet)."""
        return read_jsonl(self.metrics_path) if self.metrics_path.is_file() else []

    def truncate_logs(self, after_step: int) -> None:
        """Drop what was logged after ``after_step`` (work lost by an interrupted run) from
        metrics.jsonl and validation.log, so a resumed run logs each step once."""
        if self.metrics_path.is_file():
            rows = [r for r in self.read_metrics() if r.get("step", 0) <= after_step]
            atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in rows))
        if self.validation_log.is_file():
            kept = []
            for block in split_validation_log(self.validation_log.read_text(encoding="utf-8",
                                                                             errors="replace")):
                found = re.match(r"Validation at step (\d+)", block)
                if found and int(found.group(1)) > after_step:
                    break
                kept.append(block)
            atomic_write_text(self.validation_log, "".join(kept))

    def append_validation_log(self, text: str) -> None:
        with open(self.validation_log, "a", encoding="utf-8") as handle:
            handle.write(text.rstrip("\n") + "\n")


def split_validation_log(text: str) -> list[str]:
    """validation.log -> its entries, each starting at a 'Validation at step N' line."""
    blocks: list[str] = []
    for line in re.findall(r"[^\n]*\n|[^\n]+$", text):
        if line.startswith("Validation at step ") or not blocks:
            blocks.append(line)
        else:
            blocks[-1] += line
    return blocks


# A run's config.yaml lists every key, so a key added later is missing only from runs written
# before it existed. Those runs were trained with the value given here (the behaviour before
# the key existed), whatever the key's default is now.
KEYS_ADDED_LATER = {("model", "decoder", "attentional_output"): "tanh"}


def load_run_config(run: RunDirectory | ExportFolder) -> Config:
    """The run's config.yaml, checked like any config (keys added since filled as trained)."""
    try:
        raw = yaml.safe_load(run.config_path.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        raise UserError(f"{run.config_path}: not valid YAML") from None
    except UnicodeDecodeError:
        raise UserError(f"{run.config_path}: not valid UTF-8") from None
    if not isinstance(raw, dict):
        raise UserError(f"{run.config_path}: expected a mapping of sections")
    for (*sections, key), value in KEYS_ADDED_LATER.items():
        node: Any = raw
        for section in sections:
            node = node.get(section) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.setdefault(key, value)
    return config_from_dict(raw, source=str(run.config_path))


def tokenizer_names(config: Config) -> tuple[str, str]:
    """File names (without extension) of the input and output tokenizers in a run."""
    if config.task != "translation":
        return TEXT_TOKENIZER, TEXT_TOKENIZER
    return ("joint", "joint") if config.tokenizer.joint else ("src", "trg")
