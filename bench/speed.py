#!/usr/bin/env python
"""Measure seq2seq's own training and decoding speed on the peers' reference model.

    python bench/speed.py                                   # bench/reference_en_de.yaml, 300 steps
    python bench/speed.py --steps 1600 --run-dir /tmp/ref   # longer run, keep the model
    python bench/speed.py --decode-only --run-dir /tmp/ref  # decode with an existing run
    python bench/speed.py --set training.cpu_amp=true --amp # bfloat16 training and decoding
    python bench/speed.py --train-only --set training.cpu_amp=auto  # training speed only

Prints and writes (``--out``) JSON with: training target tokens/s in steady state (the first
log interval dropped), peak RSS of the training process, and for beam 5 and greedy on the
config's test split: sentences/s for generation alone (in-process, model loaded) and for the
whole `seq2seq translate` process, plus BLEU. Run it in the same session as
../shared/bench/run_peers.sh and compare ratios: the machine is shared, absolute figures drift.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def train(config: Path, run_dir: Path, steps: int, overrides: list[str]) -> dict:
    command = [sys.executable, str(ROOT / "cli.py"), "train", str(config), "--run-dir",
               str(run_dir), "--overwrite", "-q", "--set", f"training.max_steps={steps}"]
    for override in overrides:
        command += ["--set", override]
    started = time.perf_counter()
    subprocess.run(command, check=True)
    wall = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["type"] == "train"]
    steady = train_rows[1:] or train_rows
    # Each row covers the interval since the previous one; tokens = speed * interval seconds.
    seconds = sum(b["train_seconds"] - a["train_seconds"] for a, b in zip(train_rows, train_rows[1:]))
    tokens = sum(r["tokens_per_s"] * (r["train_seconds"] - p["train_seconds"])
                 for p, r in zip(train_rows, train_rows[1:]))
    return {"steps": steps, "wall_seconds": round(wall, 1),
            "target_tokens_per_s": round(tokens / seconds, 1) if seconds else None,
            "intervals": len(steady), "peak_rss_mib": round(peak_kib / 1024, 1)}


def decode(run_dir: Path, beam: int, amp: bool) -> dict:
    from seq2seq import Translator
    from seq2seq.data.translation import load_parallel
    from seq2seq.metrics.translation import score_translations
    from seq2seq.runtime import configure_threads

    configure_threads(0)  # as `seq2seq translate` does: every free core, following the load
    translator = Translator.from_pretrained(run_dir, device="cpu")
    texts = load_parallel(translator.config.data, "test")
    sources, references = texts["src"], texts["trg"]
    started = time.perf_counter()
    hypotheses = translator.translate(sources, beam_size=beam, batch_size=64, amp=amp)
    generation = time.perf_counter() - started
    # written beside the run, not into it: a run directory holds only what seq2seq wrote
    out_dir = run_dir.with_name(run_dir.name + "_decoded")
    out_dir.mkdir(exist_ok=True)
    src_file = out_dir / "test.src"
    src_file.write_text("".join(s + "\n" for s in sources), encoding="utf-8")
    started = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "cli.py"), "translate", str(run_dir), "--input",
                    str(src_file), "--output", str(out_dir / f"hyp_b{beam}.txt"),
                    "--beam-size", str(beam), "--batch-size", "64", "--amp" if amp else "--no-amp"],
                   check=True)
    whole = time.perf_counter() - started
    bleu = score_translations(hypotheses, references, ("bleu",))["bleu"].value
    return {"beam": beam, "amp": amp, "sentences": len(sources),
            "generation_sentences_per_s": round(len(sources) / generation, 1),
            "generation_seconds": round(generation, 2), "whole_process_seconds": round(whole, 2),
            "bleu": round(bleu, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "bench" / "reference_en_de.yaml")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--run-dir", type=Path, default=Path("/tmp/seq2seq_bench/reference"))
    parser.add_argument("--decode-only", action="store_true")
    parser.add_argument("--train-only", action="store_true", help="skip decoding")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for training, e.g. training.cpu_amp=true")
    parser.add_argument("--amp", action="store_true", help="decode in mixed precision (bfloat16 on CPU)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    import torch

    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": f"{platform.processor() or platform.machine()}, "
                         f"{torch.get_num_threads()} threads, torch {torch.__version__}",
              "config": str(args.config)}
    if not args.decode_only:
        result["training"] = train(args.config, args.run_dir, args.steps, args.set)
        result["overrides"] = args.set
    if not args.train_only:
        result["decoding"] = [decode(args.run_dir, beam, args.amp) for beam in (5, 1)]
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
