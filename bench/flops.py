#!/usr/bin/env python
"""Count the matrix-product work of training and decoding, and what a speed bar asks of the CPU.

    python bench/flops.py --run-dir /tmp/seq2seq_bench/reference
    python bench/flops.py --run-dir /tmp/seq2seq_bench/reference --peer 2307 80 278

The run directory is a trained translation run (``bench/speed.py`` leaves one). Prints JSON:

- ``ceiling``: GFLOP/s of float32 products of the model's own shapes on this machine;
- ``training``: product GFLOP per 1,000 target tokens (forward and backward, counted by
  ``torch.utils.flop_counter`` over real training batches of the run's config, padding included);
- ``decoding``: product GFLOP per sentence for beam 5 and greedy on the config's test split;
- with ``--peer TRAIN BEAM5 GREEDY`` (the faster peer's tokens/s and sentences/s): the GFLOP/s
  that 1.5x its training speed and 2x its decoding speeds would need for the products alone.

Products are what the CPU does fastest, so "needed / ceiling" is a lower bound on the share of
the machine a speed asks for: the rest (softmax, tanh, optimizer, bookkeeping) comes on top.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from seq2seq import Translator  # noqa: E402
from seq2seq.data.translation import load_parallel  # noqa: E402
from seq2seq.run_directory import RunDirectory, load_run_config  # noqa: E402
from seq2seq.tasks.translation import TranslationTask  # noqa: E402


def product_ceiling(shapes: list[tuple[int, int, int]], repeats: int = 20) -> dict[str, float]:
    """GFLOP/s of float32 [m x k] @ [k x n] products, best of ``repeats`` timed runs."""
    rates = {}
    for m, k, n in shapes:
        a, b = torch.randn(m, k), torch.randn(k, n)
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - started)
        rates[f"{m}x{k}x{n}"] = round(2 * m * k * n / best / 1e9, 1)
    return rates


def training_flops(run_dir: Path, batches: int) -> dict:
    """Product FLOPs of forward + backward over the first ``batches`` training batches."""
    run = RunDirectory(run_dir)
    config = load_run_config(run)
    task = TranslationTask.setup(config, run, True, torch.device("cpu"), Console(quiet=True))
    task.model.train()
    tokens = 0
    with FlopCounterMode(display=False) as counter:
        for indices in task.train_batches(0)[:batches]:
            loss, _, count = task.loss(task.make_batch(indices, torch.device("cpu")), 0)
            (loss / count).backward()
            tokens += count
    total = counter.get_total_flops()
    return {"batches": batches, "target_tokens": tokens,
            "gflop_per_1k_target_tokens": round(total / tokens * 1000 / 1e9, 2)}


def decoding_flops(run_dir: Path, sentences: int) -> dict:
    """Product FLOPs per sentence of beam-5 and greedy decoding of the test split."""
    translator = Translator.from_pretrained(run_dir, device="cpu")
    sources = load_parallel(translator.config.data, "test")["src"][:sentences]
    result = {"sentences": len(sources)}
    for beam in (5, 1):
        with FlopCounterMode(display=False) as counter:
            translator.translate(sources, beam_size=beam, batch_size=64)
        result[f"beam{beam}_gflop_per_sentence"] = round(
            counter.get_total_flops() / len(sources) / 1e9, 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", type=Path, default=Path("/tmp/seq2seq_bench/reference"))
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--sentences", type=int, default=1000)
    parser.add_argument("--peer", type=float, nargs=3, metavar=("TRAIN", "BEAM5", "GREEDY"),
                        help="the faster peer's training tokens/s and decoding sentences/s")
    args = parser.parse_args()
    torch.manual_seed(0)

    result = {"threads": torch.get_num_threads(), "torch": torch.__version__,
              "ceiling_gflop_per_s": product_ceiling(
                  [(1024, 512, 8000), (320, 512, 8000), (64, 512, 8000), (64, 512, 1536),
                   (64, 1536, 512), (1536, 64, 512)]),
              "training": training_flops(args.run_dir, args.batches),
              "decoding": decoding_flops(args.run_dir, args.sentences)}
    if args.peer:
        train, beam5, greedy = args.peer
        result["needed_gflop_per_s"] = {
            "training_1.5x": round(1.5 * train * result["training"]["gflop_per_1k_target_tokens"]
                                   / 1000, 1),
            "beam5_2x": round(2 * beam5 * result["decoding"]["beam5_gflop_per_sentence"], 1),
            "greedy_2x": round(2 * greedy * result["decoding"]["beam1_gflop_per_sentence"], 1)}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
