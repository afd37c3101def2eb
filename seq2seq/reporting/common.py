"""Report sections every head shares: the model, the data, the settings, the machine and time,
and the training curves of the run."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..config import Config
from ..data.loading import file_fingerprint
from ..run_directory import RunDirectory
from ..tokenizers import Tokenizer
from . import plots
from .document import Document


def describe_model(config: Config, model: torch.nn.Module, tokenizers: dict[str, Tokenizer]
                   ) -> dict[str, Any]:
    """What a reader needs to know about the model, as stable JSON-able keys."""
    m, enc = config.model, config.model.encoder
    info: dict[str, Any] = {
        "task": config.task,
        "parameters": sum(p.numel() for p in model.parameters()),
        "embedding_size": m.embedding_size,
        "encoder": {"cell": enc.cell, "layers": enc.layers, "hidden_size": enc.hidden_size,
                    "bidirectional": enc.bidirectional},
    }
    if config.task == "translation":
        dec = m.decoder
        info["decoder"] = {"cell": dec.cell, "layers": dec.layers, "hidden_size": dec.hidden_size,
                           "attention": dec.attention if dec.attention != "luong"
                           else f"luong ({dec.luong_score})",
                           "input_feeding": dec.input_feeding}
    elif config.task == "classification":
        info["classifier"] = {"pooling": m.classifier.pooling,
                              "hidden_size": m.classifier.hidden_size}
    info["tokenizers"] = {side: {"kind": tok.kind, "vocab_size": tok.vocab_size}
                          for side, tok in tokenizers.items()}
    return info


def describe_files(paths: list[Path]) -> list[dict[str, Any]]:
    """Each data file with its size and sha256, so a report says exactly what was scored."""
    return [{"path": str(p), "bytes": p.stat().st_size, "sha256": file_fingerprint(str(p))}
            for p in paths if p.is_file()]


def describe_hardware(device: torch.device) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle
                        if line.startswith("model name")), cpu)
    except OSError:
        pass
    info = {"device": str(device), "cpu": cpu, "cpu_cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "seq2seq": __version__,
            "platform": platform.platform()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def model_section(doc: Document, model_info: dict[str, Any]) -> None:
    doc.heading("Model")
    rows = [["task", model_info["task"]], ["parameters", model_info["parameters"]],
            ["embedding size", model_info["embedding_size"]]]
    enc = model_info["encoder"]
    per = " per direction" if enc["bidirectional"] else ""
    rows.append(["encoder", f"{enc['layers']}-layer {'bidirectional ' if enc['bidirectional'] else ''}"
                            f"{enc['cell'].upper()}, {enc['hidden_size']}{per}"])
    if "decoder" in model_info:
        dec = model_info["decoder"]
        rows.append(["decoder", f"{dec['layers']}-layer {dec['cell'].upper()}, {dec['hidden_size']}"])
        rows.append(["attention", dec["attention"] + (", input feeding" if dec["input_feeding"]
                                                      and dec["attention"] != "none" else "")])
    if "classifier" in model_info:
        head = model_info["classifier"]
        rows.append(["pooling", head["pooling"]])
        rows.append(["classifier", "linear" if not head["hidden_size"]
                     else f"MLP, hidden {head['hidden_size']}"])
    for side, tok in model_info["tokenizers"].items():
        rows.append([f"tokenizer ({side})", f"{tok['kind']}, vocabulary {tok['vocab_size']:,}"])
    doc.table(["", "value"], rows)


def data_section(doc: Document, described: str, amount: str,
                 files: list[dict[str, Any]]) -> None:
    """``amount``: what was evaluated, e.g. "1,000 sentences" or "20,000 tokens"."""
    doc.heading("Data evaluated")
    doc.text(f"{described}: {amount}.")
    if files:
        doc.table(["file", "bytes", "sha256"],
                  [[f["path"], f["bytes"], f["sha256"]] for f in files])


def settings_section(doc: Document, title: str, settings: dict[str, Any]) -> None:
    doc.heading(title)
    doc.table(["setting", "value"], [[k, v] for k, v in settings.items()])


def environment_section(doc: Document, hardware: dict[str, Any], seconds: float,
                        training_seconds: float | None) -> None:
    doc.heading("Hardware and time")
    rows = [[k.replace("_", " "), v] for k, v in hardware.items()]
    rows.append(["evaluation time", f"{seconds:.1f} s"])
    if training_seconds is not None:
        rows.append(["training time", f"{training_seconds / 60:.1f} min"])
    doc.table(["", "value"], rows)


def read_metrics_log(run: RunDirectory) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train rows, validation rows) of ``metrics.jsonl``; empty lists when there is none."""
    rows = run.read_metrics()
    return ([r for r in rows if r.get("type") == "train"],
            [r for r in rows if r.get("type") == "valid"])


def training_seconds(run: RunDirectory) -> float | None:
    train, _ = read_metrics_log(run)
    return train[-1].get("train_seconds") if train else None


def training_section(doc: Document, run: RunDirectory, metric: str) -> None:
    """Training and validation curves from the run's metrics.jsonl."""
    doc.heading("Training curves")
    train, valid = read_metrics_log(run)
    if not train and not valid:
        doc.text(f"{run.metrics_path} has no rows: no training curves to show.", note=True)
        return
    doc.figure("training_curves", plots.training_curves(train, valid, metric),
               f"Training and validation loss, and validation {metric}, against steps "
               f"({len(train)} training log rows, {len(valid)} validations).")
    if valid:
        best = max(valid, key=lambda r: r.get(metric, float("-inf"))) if metric not in (
            "loss", "ppl", "bpc") else min(valid, key=lambda r: r.get(metric, float("inf")))
        doc.text(f"Best validation {metric}: {best.get(metric, float('nan')):.2f} at step "
                 f"{best['step']} (of {valid[-1]['step']}).")
