#!/usr/bin/env python
"""Training speed of one process against several on one machine (torchrun, gloo on the CPU).

    python bench/distributed.py                       # reference model, 300 steps, 2 cores
    python bench/distributed.py --steps 2000 --validate-every 500   # also dev BLEU over time

Trains ``bench/reference_en_de.yaml`` twice with the same global batch (64 sentences): one
process with all the cores as threads, then ``torchrun --nproc_per_node N`` processes with
one core's threads each. Prints and writes (``--out``) JSON: steady-state target tokens/s (the
first log interval dropped), wall time, and each validation's BLEU with the training seconds
it took to get there. Run it on a quiet machine: the two runs share the cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def train(run_dir: Path, args: argparse.Namespace, processes: int) -> dict:
    cores = len(os.sched_getaffinity(0))
    threads = max(1, cores // processes)
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone",
                 f"--nproc_per_node={processes}", "-m", "seq2seq"] if processes > 1
                else [sys.executable, "-m", "seq2seq"])
    command = [*launcher, "train", str(args.config), "--run-dir", str(run_dir), "--overwrite",
               "-q", "--set", f"training.max_steps={args.steps}",
               "--set", f"training.num_threads={threads}",
               "--set", f"training.validate_every={args.validate_every or args.steps}",
               "--set", "training.log_every=50", *[x for o in args.set for x in ("--set", o)]]
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    wall = time.perf_counter() - started
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steady = [r for r in rows if r["type"] == "train"][1:]
    tokens = sum(r["tokens_per_s"] for r in steady) / max(len(steady), 1)
    seconds = {r["step"]: r["train_seconds"] for r in rows if r["type"] == "train"}
    validations = [{"step": r["step"], "bleu": r.get("bleu"),
                    "train_seconds": seconds.get(r["step"])} for r in rows if r["type"] == "valid"]
    return {"processes": processes, "threads_per_process": threads,
            "target_tokens_per_s": round(tokens, 1), "wall_seconds": round(wall, 1),
            "validations": validations}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "bench/reference_en_de.yaml")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--validate-every", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], help="config override")
    parser.add_argument("--run-dir", type=Path, default=Path("/tmp/seq2seq-bench-distributed"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "machine": platform.processor() or platform.machine(),
        "cores": len(os.sched_getaffinity(0)),
        "config": str(args.config), "steps": args.steps,
        "runs": [train(args.run_dir / "one", args, 1),
                 train(args.run_dir / f"x{args.processes}", args, args.processes)],
    }
    text = json.dumps(results, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
