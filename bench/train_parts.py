#!/usr/bin/env python
"""What a training-step trick buys: float32 training steps of a trained run's model with the
trick and with it undone, in turns, in one process.

    python bench/train_parts.py --run-dir runs/demo_es_en
    python bench/train_parts.py --run-dir /tmp/seq2seq_bench/reference --steps 20 --rounds 5

Variants: ``fast`` (what training uses) and ``torch's tanh`` (Bahdanau energies through
``Tensor.tanh_``, not ``functional.tanh_``). Each round runs ``--steps`` steps of each variant
on the same batches of the run's training data (loss, backward, clipping, Adam, as the trainer
takes them), starting from the run's weights; the median target tokens/s of each is printed,
with the largest difference of their losses. Run it with nothing else running.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from rich.console import Console

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from seq2seq.config import load_config  # noqa: E402
from seq2seq.models import attention  # noqa: E402
from seq2seq.run_directory import RunDirectory, load_weights  # noqa: E402
from seq2seq.runtime import configure_threads  # noqa: E402
from seq2seq.tasks.translation import TranslationTask  # noqa: E402
from seq2seq.training.optim import build_optimizer  # noqa: E402

VARIANTS = ["fast", "torch's tanh"]


@contextmanager
def variant(name: str) -> Iterator[None]:
    saved = attention.tanh_
    if name == "torch's tanh":
        attention.tanh_ = torch.Tensor.tanh_
    try:
        yield
    finally:
        attention.tanh_ = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", type=Path, default=Path("/tmp/seq2seq_bench/reference"))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    threads = configure_threads(0)
    run = RunDirectory(args.run_dir)
    config = load_config(run.config_path, [])
    config.training.cpu_amp = False
    device = torch.device("cpu")
    task = TranslationTask.setup(config, run, True, device, Console(quiet=True))
    model = task.model
    batches = [task.make_batch(b, device) for b in task.train_batches(0)[: args.steps + 3]]

    def train(name: str) -> tuple[float, list[float]]:
        load_weights(model, run.path / "model.safetensors")
        model.train()
        optimizer = build_optimizer(model.parameters(), config.training)
        torch.manual_seed(0)
        tokens, losses, started = 0, [], 0.0
        with variant(name):
            for step, batch in enumerate(batches):
                if step == 3:  # three warm-up steps
                    started, tokens = time.perf_counter(), 0
                loss, _, predictions = task.loss(batch, step)
                (loss / max(predictions, 1)).backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.training.clip_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                tokens += predictions
                losses.append(loss.item() / predictions)
        return tokens / (time.perf_counter() - started), losses

    speeds: dict[str, list[float]] = {name: [] for name in VARIANTS}
    losses: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for name in VARIANTS:
            speed, losses[name] = train(name)
            speeds[name].append(speed)
    difference = max(abs(a - b) for a, b in zip(*losses.values()))
    report = {"run_dir": str(args.run_dir), "threads": threads, "steps": args.steps,
              "rounds": args.rounds,
              "target_tokens_per_s": {n: round(statistics.median(s), 1) for n, s in speeds.items()},
              "largest_loss_difference": difference}
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
