"""The models a server holds: each run loaded by its head's inference class, wrapped in its
head's service and given a batcher; what ``GET /v1/models`` says about each."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError
from ..heads import Head, head_of
from ..pretrained import run_task
from ..run_directory import RunDirectory
from .batching import Batcher
from .schemas import Limits

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass
class ServedModel:
    name: str
    head: Head
    run_dir: Path
    inference: Any  # the head's inference object (Translator, Classifier, Generator)
    service: Any  # the head's service (seq2seq.serving.translation, ...)
    batcher: Batcher

    def describe(self) -> dict[str, Any]:
        model = self.inference
        config = model.config
        pytorch = isinstance(model.model, torch.nn.Module)  # else an ONNX export's graphs
        return {"name": self.name, "head": self.head.task, "endpoint": f"/v1/{self.head.command}",
                "run_dir": str(self.run_dir), "config_name": config.name,
                "backend": "pytorch" if pytorch else "onnx",
                "parameters": sum(p.numel() for p in model.model.parameters()) if pytorch else None,
                "architecture": {"cell": config.model.encoder.cell,
                                 "hidden_size": config.model.encoder.hidden_size,
                                 "layers": config.model.encoder.layers},
                "training": training_figures(model.run, config.training.early_stopping_metric),
                **self.service.describe(),
                "served": {"requests": self.batcher.requests, "batches": self.batcher.batches}}


def training_figures(run: RunDirectory | None, metric: str) -> dict[str, Any]:
    """The best validation score and the steps trained, as the run directory records them."""
    best = run.best_index() if run is not None else []
    rows = run.read_metrics() if run is not None else []
    steps = max((r.get("step", 0) for r in rows), default=0)
    return {"metric": metric, "best": best[0]["score"] if best else None,
            "best_step": best[0]["step"] if best else None, "steps": steps}


def parse_model_specs(specs: list[str]) -> list[tuple[str, Path]]:
    """``RUN_DIR`` or ``NAME=RUN_DIR`` -> (name, run dir); a bare run is named after its folder."""
    found: list[tuple[str, Path]] = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or Path(spec).exists() or not NAME.fullmatch(name):
            name, path = Path(spec).resolve().name, spec
        if not NAME.fullmatch(name):
            raise UserError(f"model name {name!r} is not valid: letters, digits, '.', '_', '-' "
                            f"(name it: NAME={path})")
        if any(name == other for other, _ in found):
            raise UserError(f"two models named {name!r}: name them apart, NAME=RUN_DIR")
        found.append((name, Path(path)))
    if not found:
        raise UserError("give at least one RUN_DIR to serve")
    return found


def load_model(name: str, run_dir: Path, limits: Limits, device: str = "auto",
               budget: int = 4096, max_wait: float = 0.02, workers: int = 1,
               threads: int | None = None) -> ServedModel:
    """Load the run with its head's inference class and wrap it in the head's service, whose
    batches ``workers`` threads compute, each on ``threads`` torch threads (see Batcher)."""
    head = head_of(run_task(run_dir), str(run_dir))
    model = head.load("inference").from_pretrained(run_dir, device=device)
    service = head.load("service")(name, model, limits)
    batcher = Batcher(name, service.run, budget, max_wait, workers, threads)
    return ServedModel(name, head, run_dir, model, service, batcher)
