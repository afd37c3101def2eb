#!/usr/bin/env python
"""Where a float32 training step and a decoding step of the reference model spend their time.

    python bench/speed.py --steps 1600 --run-dir /tmp/seq2seq_bench/reference   # once
    python bench/profile_step.py --run-dir /tmp/seq2seq_bench/reference [--onednn]

Loads the run's tokenizers and weights, then profiles (torch.profiler, CPU) ``--steps``
training steps after ``--warmup`` unprofiled ones, exactly as the trainer takes them (loss,
backward, clipping, Adam), and beam-5 and greedy decoding of the first ``--sentences`` test
sentences in batches of 64. For each it prints the wall time, the time inside operators by
kind (matrix products by shape, recurrent cell kernels, copies and indexing, everything else)
and what is left outside any operator (Python, autograd bookkeeping, dispatch), plus the
training batches' padding. Float32 (ATen's products, or oneDNN's with ``--onednn``), the
thread count of ``seq2seq train`` on a quiet machine.
Run it with nothing else running.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import torch
from rich.console import Console
from torch.profiler import ProfilerActivity, profile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from seq2seq import Translator  # noqa: E402
from seq2seq.config import load_config  # noqa: E402
from seq2seq.data.translation import load_parallel  # noqa: E402
from seq2seq.models.functional import onednn_products  # noqa: E402
from seq2seq.run_directory import RunDirectory, load_weights  # noqa: E402
from seq2seq.runtime import configure_threads  # noqa: E402
from seq2seq.tasks.translation import TranslationTask  # noqa: E402
from seq2seq.training.optim import build_optimizer  # noqa: E402

PRODUCTS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::addmv", "aten::mv",
            "mkldnn::_linear_pointwise"}  # the search's packed products
CELLS = {"aten::_thnn_fused_gru_cell", "aten::_thnn_fused_gru_cell_backward",
         "aten::_thnn_fused_lstm_cell", "aten::_thnn_fused_lstm_cell_backward",
         "aten::gru_cell", "aten::lstm_cell", "aten::rnn_tanh_cell", "aten::gru", "aten::lstm",
         "aten::mkldnn_rnn_layer", "aten::mkldnn_rnn_layer_backward"}
MOVES = {"aten::copy_", "aten::cat", "aten::stack", "aten::index_select", "aten::index",
         "aten::embedding_dense_backward", "aten::index_add_", "aten::clone", "aten::contiguous",
         "aten::_to_copy", "aten::fill_", "aten::zero_", "aten::zeros", "aten::empty",
         "aten::empty_strided", "aten::scatter_", "aten::gather", "aten::masked_fill_"}


def breakdown(prof: profile, wall: float, units: int, unit: str) -> dict:
    """Self CPU time of the main thread's operators by kind, per ``unit``."""
    kinds: dict[str, float] = defaultdict(float)
    by_op: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    products: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for event in prof.key_averages(group_by_input_shape=True):
        seconds = event.self_cpu_time_total / 1e6
        name = event.key
        kind = ("matrix products" if name in PRODUCTS else "recurrent cells" if name in CELLS
                else "copies, indexing, allocation" if name in MOVES else "other operators")
        kinds[kind] += seconds
        by_op[name][0] += seconds
        by_op[name][1] += event.count
        if name in PRODUCTS:
            shapes = " x ".join("x".join(map(str, s)) for s in event.input_shapes if s)
            products[f"{name} {shapes}"][0] += seconds
            products[f"{name} {shapes}"][1] += event.count
    inside = sum(kinds.values())
    kinds["outside operators (Python, autograd, dispatch)"] = max(0.0, wall - inside)
    share = {k: f"{100 * v / wall:.1f} %" for k, v in sorted(kinds.items(), key=lambda x: -x[1])}
    top = sorted(by_op.items(), key=lambda x: -x[1][0])[:15]
    top_products = sorted(products.items(), key=lambda x: -x[1][0])[:10]
    return {"wall_seconds": round(wall, 3), f"ms per {unit}": round(1000 * wall / units, 2),
            "share of wall time": share,
            "top operators (ms, calls)": {n: [round(1000 * t, 1), c] for n, (t, c) in top},
            "top matrix products by shape (ms, calls)":
                {n: [round(1000 * t, 1), c] for n, (t, c) in top_products}}


def profiled(work: Callable[[], int]) -> tuple[profile, float, int]:
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        started = time.perf_counter()
        units = work()
        wall = time.perf_counter() - started
    return prof, wall, units


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", type=Path, default=Path("/tmp/seq2seq_bench/reference"))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--sentences", type=int, default=256)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--onednn", action="store_true",
                        help="training's float32 products in oneDNN (training.onednn: true)")
    args = parser.parse_args()
    threads = configure_threads(0)
    run = RunDirectory(args.run_dir)
    config = load_config(run.config_path, [])
    device = torch.device("cpu")
    task = TranslationTask.setup(config, run, True, device, Console(quiet=True))
    model = task.model
    load_weights(model, run.path / "model.safetensors")
    model.train()
    optimizer = build_optimizer(model.parameters(), config.training)
    batches = task.train_batches(0)
    result: dict = {"threads": threads, "torch": torch.__version__}

    def train_steps(first: int, count: int) -> int:
        tokens = 0
        for step in range(first, first + count):
            batch = task.make_batch(batches[step], device)
            with onednn_products(args.onednn):
                loss, _, predictions = task.loss(batch, step)
            (loss / max(predictions, 1)).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.training.clip_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            tokens += predictions
        return tokens

    train_steps(0, args.warmup)
    prof, wall, tokens = profiled(lambda: train_steps(args.warmup, args.steps))
    real = padded = 0  # target positions computed, and the real tokens among them
    for step in range(args.warmup, args.warmup + args.steps):
        batch = task.make_batch(batches[step], device)
        real += batch.n_target_tokens
        padded += batch.trg_output.numel()
    result["training"] = breakdown(prof, wall, args.steps, "step")
    result["training"]["target tokens/s"] = round(tokens / wall, 1)
    result["training"]["target padding"] = f"{100 * (1 - real / padded):.1f} %"

    translator = Translator.from_pretrained(args.run_dir, device="cpu")
    sources = load_parallel(config.data, "test")["src"][: args.sentences]
    for beam in (5, 1):
        translator.translate(sources[:64], beam_size=beam, batch_size=64, amp=False)
        prof, wall, _ = profiled(lambda beam=beam: len(translator.translate(
            sources, beam_size=beam, batch_size=64, amp=False)))
        name = "greedy" if beam == 1 else f"beam {beam}"
        result[name] = breakdown(prof, wall, len(sources), "sentence")
        result[name]["sentences/s"] = round(len(sources) / wall, 1)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    assert math.isfinite(wall)


if __name__ == "__main__":
    main()
