#!/usr/bin/env python
"""Start-up on a corpus far larger than Multi30k: time to the first training step, memory per process.

    python bench/large_corpus.py                                  # 500k and 5M pairs, 2 processes
    python bench/large_corpus.py --pairs 200000 --processes 1     # a quick look

For each size, writes a parallel corpus of that many pairs (Multi30k's training set repeated,
each copy's sentences ending in its number, so no two copies are equal), then trains
``bench/reference_en_de.yaml`` on it with ``torchrun --nproc_per_node N`` three times:

- ``cold``: a new run and an empty ``HF_DATASETS_CACHE`` (read the text into Arrow, train the
  tokenizer on rank 0, tokenise the corpus, write the memory-mapped id files);
- ``new run``: another new run on the same corpus (the tokenizer is trained again and comes out
  the same, so the tokenised corpus is found in the cache);
- ``resume``: ``--resume`` of that run (a restart: tokenizers from the run directory, corpus
  from the cache).

Each launch reports the seconds from the launch until the first training step is logged, and,
per process (torchrun's agent and every rank), the peak resident memory (VmHWM: anonymous plus
file pages mapped in) and the peak anonymous memory (RssAnon, what the process itself holds),
read from /proc every 50 ms. Prints and writes (``--out``) JSON. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MULTI30K = ROOT.parent / "shared/data/multi30k"


def write_corpus(prefix: Path, pairs: int) -> None:
    """``prefix``.en / .de with ``pairs`` lines: Multi30k train repeated, copy k ending in " k"."""
    if all(Path(f"{prefix}.{lang}").is_file() for lang in ("en", "de")):
        return
    for lang in ("en", "de"):
        lines = (MULTI30K / f"train.{lang}").read_text(encoding="utf-8").splitlines()
        tmp = Path(f"{prefix}.{lang}.tmp")
        with open(tmp, "w", encoding="utf-8") as out:
            written, copy = 0, 0
            while written < pairs:
                chunk = lines[: pairs - written]
                out.write("".join(f"{line} {copy}\n" for line in chunk))
                written += len(chunk)
                copy += 1
        tmp.rename(f"{prefix}.{lang}")


def descendants(pid: int) -> list[int]:
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        try:
            children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        except OSError:
            continue
        found += [int(c) for c in children]
        frontier += [int(c) for c in children]
    return found


def status_kib(pid: int) -> dict[str, int]:
    values = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmHWM", "RssAnon"):
                values[key] = int(rest.split()[0])
    except OSError:
        pass
    return values


def role(pid: int) -> str:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return "?"
    for item in environ:
        if item.startswith(b"RANK="):
            return f"rank {item[5:].decode()}"
    return "launcher"


def launch(command: list[str], env: dict[str, str], metrics: Path) -> dict[str, Any]:
    """Run ``command``; seconds until ``metrics`` holds a training row, peak memory per process."""
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    peaks: dict[int, dict[str, int]] = {}
    roles: dict[int, str] = {}
    first_step: list[float] = []
    # A training row not there before: --overwrite replaces the file (another inode).
    before = (metrics.stat().st_ino, len(metrics.read_text().splitlines())) if metrics.is_file() else None

    def watch() -> None:
        while process.poll() is None:
            for pid in [process.pid, *descendants(process.pid)]:
                values = status_kib(pid)
                if not values:
                    continue
                roles.setdefault(pid, role(pid))
                peak = peaks.setdefault(pid, {})
                for key, value in values.items():
                    peak[key] = max(peak.get(key, 0), value)
            if not first_step and metrics.is_file():
                try:
                    same = before is not None and metrics.stat().st_ino == before[0]
                    rows = metrics.read_text().splitlines()[before[1] if same and before else 0:]
                except OSError:  # replaced while read
                    rows = []
                if any('"type": "train"' in r or '"type":"train"' in r for r in rows):
                    first_step.append(time.perf_counter() - started)
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    code = process.wait()
    watcher.join()
    if code != 0:
        raise SystemExit(f"{' '.join(command)} exited with {code}")
    memory: list[dict[str, Any]] = [
        {"process": roles[pid], "peak_rss_mib": round(p.get("VmHWM", 0) / 1024, 1),
         "peak_anon_mib": round(p.get("RssAnon", 0) / 1024, 1)}
        for pid, p in peaks.items() if roles.get(pid, "?") != "?"]
    # The Python processes only (torchrun's agent, the ranks), not the shells between them.
    memory = sorted((m for m in memory if m["peak_rss_mib"] > 50), key=lambda m: m["process"])
    return {"seconds_to_first_step": round(first_step[0], 1) if first_step else None,
            "wall_seconds": round(time.perf_counter() - started, 1), "processes": memory}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, nargs="+", default=[500_000, 5_000_000])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/tmp/seq2seq-bench-large"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    threads = max(1, len(os.sched_getaffinity(0)) // args.processes)
    results = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
               "machine": platform.processor() or platform.machine(),
               "cores": len(os.sched_getaffinity(0)), "processes": args.processes, "sizes": []}
    for pairs in args.pairs:
        prefix = args.work / f"corpus_{pairs}"
        started = time.perf_counter()
        write_corpus(prefix, pairs)
        print(f"{pairs:,} pairs written in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        cache = args.work / f"hf_cache_{pairs}"
        shutil.rmtree(cache, ignore_errors=True)
        env = {**os.environ, "HF_DATASETS_CACHE": str(cache), "OMP_NUM_THREADS": str(threads)}
        run = args.work / f"run_{pairs}"
        base = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc_per_node={args.processes}", "-m", "seq2seq", "train",
                str(ROOT / "bench/reference_en_de.yaml"), "--run-dir", str(run), "-q",
                "--set", f"data.train={prefix}", "--set", f"training.num_threads={threads}",
                "--set", "training.log_every=1", "--set", "training.validate_every=100000"]
        size = {"pairs": pairs, "corpus_mib": round(sum(
            Path(f"{prefix}.{lang}").stat().st_size for lang in ("en", "de")) / 2**20, 1)}
        for name, extra in (("cold", ["--overwrite", "--set", f"training.max_steps={args.steps}"]),
                            ("new run", ["--overwrite", "--set", f"training.max_steps={args.steps}"]),
                            ("resume", ["--resume", "--set", f"training.max_steps={2 * args.steps}"])):
            size[name] = launch([*base, *extra], env, run / "metrics.jsonl")
            print(f"{pairs:,} pairs, {name}: {json.dumps(size[name])}", file=sys.stderr)
        size["cache_mib"] = round(sum(f.stat().st_size for f in cache.rglob("*") if f.is_file())
                                  / 2**20, 1)
        results["sizes"].append(size)
    text = json.dumps(results, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
