#!/usr/bin/env python
"""What each trick of the fast search buys: the plain search against the fast one, and the
fast one with one trick at a time undone, decoding the same test set in one process.

    python bench/search_parts.py --run-dir /tmp/seq2seq_bench/reference   # a trained run
    python bench/search_parts.py --run-dir runs/demo_es_en --rounds 5 --limit 500

Variants, each with beam 5 and greedy (batch 64 or ``--batch-size``, float32): ``plain``
(seq2seq.search: every sentence stays in the batch until the last one ends), ``fast``
(seq2seq.fast_search, what inference uses), ``fast, copying the source`` (beams reorder by
copying the whole state, source included), ``fast, unpacked`` (no step product multiplied by
oneDNN with a packed weight: the output layer and, up to 64 rows, the others take the
weight on the left with MKL, the cells ATen's fused functions), ``fast, step products as
x W^T`` (nothing packed and no product with the weight on the left: all as ``F.linear``),
``fast, torch's tanh``
(Bahdanau energies through ``Tensor.tanh_``, not ``functional.tanh_``). The variants run in turn,
``--rounds`` times, and the median sentences/s of each is printed; every variant must give
the same translations. Run it with nothing else running.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from seq2seq import Translator, search, translator  # noqa: E402
from seq2seq.data.translation import load_parallel  # noqa: E402
from seq2seq.models import attention, functional  # noqa: E402
from seq2seq.models.decoder import DecoderState  # noqa: E402


@contextmanager
def variant(name: str) -> Iterator[None]:
    """Patch the searches that ``seq2seq.translator`` calls for one variant."""
    saved = (translator.greedy_search, translator.beam_search, DecoderState.reorder_beams,
             attention.tanh_)
    step_rows, packing = functional.STEP_ROWS, functional.PACKING_AVAILABLE
    if name == "plain":
        translator.greedy_search, translator.beam_search = (search.greedy_search,
                                                            search.beam_search)
    elif name == "fast, copying the source":
        DecoderState.reorder_beams = DecoderState.select  # type: ignore[method-assign]
    elif name == "fast, unpacked":
        functional.PACKING_AVAILABLE = False
    elif name == "fast, step products as x W^T":
        functional.STEP_ROWS, functional.PACKING_AVAILABLE = 0, False
    elif name == "fast, torch's tanh":
        attention.tanh_ = torch.Tensor.tanh_
    try:
        yield
    finally:
        (translator.greedy_search, translator.beam_search, DecoderState.reorder_beams,
         attention.tanh_) = saved
        functional.STEP_ROWS, functional.PACKING_AVAILABLE = step_rows, packing


VARIANTS = {1: ["plain", "fast", "fast, unpacked", "fast, step products as x W^T",
                "fast, torch's tanh"],
            5: ["plain", "fast", "fast, copying the source", "fast, unpacked",
                "fast, step products as x W^T", "fast, torch's tanh"]}


def timed(translate: Callable[[], list[str]]) -> tuple[float, list[str]]:
    started = time.perf_counter()
    out = translate()
    return time.perf_counter() - started, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", type=Path, default=Path("/tmp/seq2seq_bench/reference"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--limit", type=int, default=0, help="first N test sentences [all]")
    parser.add_argument("--batch-size", type=int, default=64, help="sentences per batch")
    parser.add_argument("--variant", action="append", default=[],
                        help="a variant to run, repeatable [all; 'fast' always runs]")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    chosen = {"fast", *args.variant}
    model = Translator.from_pretrained(args.run_dir, device="cpu")
    sources = load_parallel(model.config.data, "test")["src"]
    sources = sources[: args.limit or None]
    result: dict[str, dict[str, float]] = {}
    for beam, names in VARIANTS.items():
        names = [name for name in names if not args.variant or name in chosen]
        seconds: dict[str, list[float]] = {name: [] for name in names}
        outputs: dict[str, list[str]] = {}
        model.translate(sources[:64], beam_size=beam, batch_size=args.batch_size, amp=False)  # warm up
        for _ in range(args.rounds):
            for name in names:
                with variant(name):
                    took, outputs[name] = timed(lambda beam=beam: model.translate(
                        sources, beam_size=beam, batch_size=args.batch_size, amp=False))
                seconds[name].append(took)
        for name in names:
            assert outputs[name] == outputs["fast"], f"{name} translates differently"
        label = "greedy" if beam == 1 else f"beam {beam}"
        result[label] = {name: round(len(sources) / statistics.median(times), 1)
                         for name, times in seconds.items()}
        print(label, json.dumps(result[label]), flush=True)
    report = {"run_dir": str(args.run_dir), "sentences": len(sources), "rounds": args.rounds,
              "batch_size": args.batch_size,
              "threads": torch.get_num_threads(), "sentences_per_s": result}
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
