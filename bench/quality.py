#!/usr/bin/env python
"""Train one benchmark config and score it: the figures BENCHMARKS.md quotes, reproducibly.

    python bench/quality.py configs/multi30k_de_en.yaml                  # train + evaluate
    python bench/quality.py configs/multi30k_de_en.yaml --skip-train     # evaluate an existing run
    python bench/quality.py configs/sst2_bilstm.yaml --split dev --set training.max_minutes=10

Trains with `seq2seq train` into --run-dir (default /tmp/seq2seq_bench/<name>), then runs
`seq2seq evaluate` on the chosen split (translation: beam 5 and greedy), and writes one JSON
with the date, machine, config, training wall time and steps, and every metrics.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, str(ROOT / "cli.py")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--run-dir", type=Path)
    parser.add_argument("--split", default="test")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted run in --run-dir instead of starting afresh")
    parser.add_argument("--out", type=Path, help="results JSON [RUN_DIR/bench.json]")
    args = parser.parse_args()
    config = yaml.safe_load(args.config.read_text())
    run_dir = args.run_dir or Path("/tmp/seq2seq_bench") / config.get("name", args.config.stem)
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": machine(), "config": str(args.config), "overrides": args.overrides,
              "run_dir": str(run_dir)}
    if not args.skip_train:
        command = CLI + ["train", str(args.config), "--run-dir", str(run_dir), "-q",
                         "--resume" if args.resume else "--overwrite"]
        for item in args.overrides:
            command += ["--set", item]
        started = time.perf_counter()
        subprocess.run(command, check=True)
        result["train_wall_minutes"] = round((time.perf_counter() - started) / 60, 2)
        result["resumed"] = args.resume
    result["training"] = training_summary(run_dir)
    beams = [5, 1] if config.get("task", "translation") == "translation" else [None]
    result["evaluations"] = []
    for beam in beams:
        out_dir = run_dir / "eval" / f"{args.split}_beam{beam}" if beam else run_dir / "eval" / args.split
        command = CLI + ["evaluate", str(run_dir), "--split", args.split, "--output-dir", str(out_dir)]
        if beam:
            command += ["--beam-size", str(beam)]
        subprocess.run(command, check=True)
        result["evaluations"].append(json.loads((out_dir / "metrics.json").read_text()))
    text = json.dumps(result, indent=1, ensure_ascii=False)
    print(text)
    (args.out or run_dir / "bench.json").write_text(text + "\n")


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def training_summary(run_dir: Path) -> dict:
    """Steps, training seconds and the validation rows of metrics.jsonl."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["type"] == "train"]
    valid = [r for r in rows if r["type"] == "valid"]
    speed_key = next((k for k in ("tokens_per_s", "texts_per_s") if train and k in train[-1]), None)
    steady = train[1:] or train
    return {"steps": train[-1]["step"] if train else 0,
            "train_minutes": round(train[-1]["train_seconds"] / 60, 2) if train else 0,
            speed_key or "speed": round(sum(r[speed_key] for r in steady) / len(steady), 1)
            if speed_key else None,
            "validations": valid}


if __name__ == "__main__":
    main()
