"""The run directory: what a training run leaves on disk, written so that no crash corrupts it.

    RUN_DIR/
      run.json              format version, task, seq2seq version
      config.yaml           the resolved config the run was trained with
      <side>.model|.json    tokenizer files (``joint`` or ``src`` + ``trg``)
      model.safetensors     the model to use: best so far (or the average of the k best)
      best/step_N.safetensors   the k best checkpoints (+ best/index.json)
      checkpoints/step_N/   resumable: model.safetensors, state.pt, trainer.json
      metrics.jsonl         one JSON row per training log interval and per validation
      validation.log        human-readable validation reports

Every file is written to a temporary name and renamed into place; a resumable checkpoint is a
directory renamed into place as a whole, so a run killed at any moment leaves either the
previous checkpoint or the new one, never half of one. Nothing is ever unpickled on load:
weights are safetensors, optimizer state is loaded with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_model

from ..errors import UserError
from ..files import atomic_write_text

FORMAT_VERSION = 1
RUN_FILE = "run.json"
CONFIG_FILE = "config.yaml"
MODEL_FILE = "model.safetensors"


def save_weights(model: torch.nn.Module, path: Path) -> None:
    """Model weights -> safetensors, atomically (tied weights are stored once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_model(model, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
            twin = next((k for k, v in own.items() if k in tensors and v.data_ptr() == value.data_ptr()), None)
            if twin is not None:
                tensors[name] = tensors[twin]
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    if missing or unexpected:
        raise UserError(f"{path}: weights do not fit this model (missing: {missing[:3]}, "
                        f"unexpected: {unexpected[:3]}); was it trained with another config?")
    for name, value in tensors.items():
        if value.shape != own[name].shape:
            raise UserError(f"{path}: {name} has shape {tuple(value.shape)}, the config expects "
                            f"{tuple(own[name].shape)}")
    model.load_state_dict(tensors, strict=True)


def average_weights(paths: list[Path]) -> dict[str, torch.Tensor]:
    """Element-wise mean of several safetensors checkpoints (checkpoint averaging)."""
    total: dict[str, torch.Tensor] = {}
    for path in paths:
        for name, value in load_file(str(path), device="cpu").items():
            total[name] = total.get(name, 0) + value.double()
    return {name: (value / len(paths)).float() for name, value in total.items()}


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
        try:
            info = json.loads(info_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise UserError(f"{info_path}: not valid JSON") from None
        version = info.get("format_version")
        if version != FORMAT_VERSION:
            raise UserError(f"{self.path}: run directory format {version!r} is not supported by "
                            f"this seq2seq (reads format {FORMAT_VERSION})")
        if not self.config_path.is_file():
            raise UserError(f"{self.path}: missing {CONFIG_FILE}")
        return info

    def has_training(self) -> bool:
        return (self.path / RUN_FILE).exists() or self.checkpoints.exists()

    # ---- resumable checkpoints ----
    def save_checkpoint(self, step: int, model: torch.nn.Module, torch_state: dict,
                        trainer_state: dict, keep_last: int) -> Path:
        """Write checkpoints/step_N/ as a whole (temporary directory + rename)."""
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        final = self.checkpoints / f"step_{step:08d}"
        tmp = Path(tempfile.mkdtemp(dir=self.checkpoints, prefix=".partial_"))
        try:
            save_model(model, str(tmp / MODEL_FILE))
            torch.save(torch_state, tmp / "state.pt")
            (tmp / "trainer.json").write_text(json.dumps(trainer_state), encoding="utf-8")
            for name in (MODEL_FILE, "state.pt", "trainer.json"):
                with open(tmp / name, "rb") as handle:
                    os.fsync(handle.fileno())
            if final.exists():  # the same step saved again (e.g. a resumed run's first save)
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        for old in self.list_checkpoints()[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def list_checkpoints(self) -> list[Path]:
        """Complete resumable checkpoints, oldest first."""
        if not self.checkpoints.is_dir():
            return []
        return sorted(p for p in self.checkpoints.glob("step_*") if (p / "trainer.json").is_file())

    def load_checkpoint(self, model: torch.nn.Module) -> tuple[dict, dict]:
        """Load the newest checkpoint's weights into ``model``; return (torch state: optimizer, schedule, RNG; trainer state)."""
        found = self.list_checkpoints()
        if not found:
            raise UserError(f"{self.path}: no checkpoint to resume from (checkpoints/ is empty)")
        latest = found[-1]
        load_weights(model, latest / MODEL_FILE)
        torch_state = torch.load(latest / "state.pt", map_location="cpu", weights_only=True)
        trainer_state = json.loads((latest / "trainer.json").read_text(encoding="utf-8"))
        for stale in self.checkpoints.glob(".partial_*"):  # left by a run killed mid-save
            shutil.rmtree(stale, ignore_errors=True)
        return torch_state, trainer_state

    # ---- best checkpoints ----
    def update_best(self, step: int, score: float, higher_is_better: bool,
                    model: torch.nn.Module, keep_best: int) -> bool:
        """Record this validation; keep the ``keep_best`` best weights. True if it is the new best."""
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

    def best_index(self) -> list[dict]:
        path = self.best_dir / "index.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []

    def best_paths(self, k: int) -> list[Path]:
        return [self.best_dir / f"step_{e['step']:08d}.safetensors" for e in self.best_index()[:k]]

    # ---- logs ----
    def append_metrics(self, row: dict) -> None:
        with open(self.metrics_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")

    def truncate_metrics(self, after_step: int) -> None:
        """Drop rows logged after ``after_step`` (work lost by an interrupted run)."""
        if not self.metrics_path.is_file():
            return
        rows = [line for line in self.metrics_path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= after_step]
        atomic_write_text(self.metrics_path, "".join(r + "\n" for r in rows))

    def append_validation_log(self, text: str) -> None:
        with open(self.validation_log, "a", encoding="utf-8") as handle:
            handle.write(text.rstrip("\n") + "\n")
