#!/usr/bin/env python
"""Speed on a busy machine: bench/speed.py alone, then beside ordinary busy processes.

    python bench/busy.py                                     # the reference model, float32
    python bench/busy.py --set training.cpu_amp=true --amp   # bfloat16 training and decoding
    python bench/busy.py --busy 2                            # two busy processes beside it

Users' machines always run something else. This runs ``bench/speed.py`` (the arguments after
the ones here go to it) once on the quiet machine and once with ``--busy`` single-threaded
busy loops (plain Python ``while True``, not niced) beside it, and prints each figure with its
busy/quiet ratio. A fair share of 2 cores for a 2-thread process beside one busy thread is
about two thirds of the quiet speed. Run it with nothing else running.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_speed(arguments: list[str], out: Path, busy: int) -> dict:
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
    try:
        subprocess.run([sys.executable, str(ROOT / "bench" / "speed.py"), *arguments,
                        "--out", str(out)], check=True, stdout=subprocess.DEVNULL)
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()
    return json.loads(out.read_text())


def figures(result: dict) -> dict[str, float]:
    found = {}
    if "training" in result:
        found["training target tokens/s"] = result["training"]["target_tokens_per_s"]
    for row in result["decoding"]:
        name = "greedy" if row["beam"] == 1 else f"beam {row['beam']}"
        found[f"{name} sentences/s (generation)"] = row["generation_sentences_per_s"]
        found[f"{name} whole process, sentences/s"] = round(
            row["sentences"] / row["whole_process_seconds"], 1)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--busy", type=int, default=1, help="busy loops beside the busy run")
    parser.add_argument("--out", type=Path, default=Path("/tmp/seq2seq_bench/busy.json"))
    args, speed_arguments = parser.parse_known_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    quiet = figures(run_speed(speed_arguments, args.out.with_suffix(".quiet.json"), 0))
    busy = figures(run_speed(speed_arguments, args.out.with_suffix(".busy.json"), args.busy))
    rows = {name: {"quiet": quiet[name], "busy": busy[name],
                   "ratio": round(busy[name] / quiet[name], 3)} for name in quiet}
    for name, row in rows.items():
        print(f"{name:40s} quiet {row['quiet']:>9,.1f}  busy {row['busy']:>9,.1f}  "
              f"{row['ratio']:.0%}")
    args.out.write_text(json.dumps({"busy_loops": args.busy, "arguments": speed_arguments,
                                    "figures": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
