#!/usr/bin/env python
"""Decoding with ONNX Runtime (float32 and int8 dynamic quantisation) against PyTorch.

    python bench/speed.py --steps 1600 --run-dir /tmp/ref      # train the reference model
    python bench/onnx_speed.py --run-dir /tmp/ref               # then compare the backends
    python bench/onnx_speed.py --run-dir /tmp/ref --limit 50 --batches 64  # a quick check

The run is exported (``seq2seq export``) to ``--export-dir``, and a copy whose graphs'
weights are quantised to int8 (``onnxruntime.quantization.quantize_dynamic``) to
``--export-dir``_int8. Each backend (pytorch, onnx_float32, onnx_int8) runs in its own
process, so that its peak RSS is its own; for beam 5 and greedy at each batch size it
translates the config's test split (the first ``--limit`` sentences) after a warm-up
batch, through the same ``Translator`` and search code. Reported per backend: sentences/s
and BLEU for every (batch, beam), model size on disk (model.safetensors, or the .onnx
files), start-up (a process that imports seq2seq and loads the model, then exits) and the
peak RSS of the decoding process. Run it on a quiet machine: the figures are wall-clock.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

STARTED = time.perf_counter()
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BACKENDS = ("pytorch", "onnx_float32", "onnx_int8")


def export(run_dir: Path, export_dir: Path) -> dict:
    """``seq2seq export`` the run, and a copy quantised to int8; their sizes and times."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    started = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "cli.py"), "export", str(run_dir), "--output",
                    str(export_dir), "--overwrite"], check=True)
    seconds = time.perf_counter() - started
    int8_dir = int8_path(export_dir)
    if int8_dir.exists():
        shutil.rmtree(int8_dir)
    shutil.copytree(export_dir, int8_dir)
    for graph in sorted(int8_dir.glob("*.onnx")):
        quantized = graph.with_suffix(".int8.tmp")
        quantize_dynamic(str(graph), str(quantized), weight_type=QuantType.QInt8)
        quantized.replace(graph)
    return {"export_seconds": round(seconds, 2)}


def int8_path(export_dir: Path) -> Path:
    return export_dir.with_name(export_dir.name + "_int8")


def model_path(backend: str, run_dir: Path, export_dir: Path) -> Path:
    return {"pytorch": run_dir, "onnx_float32": export_dir,
            "onnx_int8": int8_path(export_dir)}[backend]


def size_mib(backend: str, where: Path) -> float:
    files = [where / "model.safetensors"] if backend == "pytorch" else list(where.glob("*.onnx"))
    return round(sum(f.stat().st_size for f in files) / 2**20, 2)


def child(where: Path, threads: int, batches: list[int], beams: list[int], limit: int,
          load_only: bool) -> dict:
    """In a process of its own: load one backend, decode, report (JSON on stdout)."""
    import torch

    torch.set_num_threads(threads)  # before loading: ONNX Runtime sessions take it too
    from seq2seq import Translator
    from seq2seq.data.translation import load_parallel
    from seq2seq.metrics.translation import score_translations

    translator = Translator.from_pretrained(where, device="cpu")
    loaded = time.perf_counter() - STARTED
    if load_only:
        return {"loaded_seconds": round(loaded, 3)}
    texts = load_parallel(translator.config.data, "test")
    sources, references = texts["src"][:limit or None], texts["trg"][:limit or None]
    runs = []
    for batch in batches:
        for beam in beams:
            translator.translate(sources[:batch], beam_size=beam, batch_size=batch, amp=False)
            started = time.perf_counter()
            hypotheses = translator.translate(sources, beam_size=beam, batch_size=batch,
                                              amp=False)
            seconds = time.perf_counter() - started
            bleu = score_translations(hypotheses, references, ("bleu",))["bleu"].value
            runs.append({"batch": batch, "beam": beam, "sentences": len(sources),
                         "seconds": round(seconds, 2),
                         "sentences_per_s": round(len(sources) / seconds, 1),
                         "bleu": round(bleu, 2)})
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"decoding": runs, "peak_rss_mib": round(peak, 1)}


def run_child(where: Path, args: argparse.Namespace, load_only: bool) -> tuple[dict, float]:
    command = [sys.executable, __file__, "--child", str(where), "--threads", str(args.threads),
               "--batches", args.batches, "--beams", args.beams, "--limit", str(args.limit)]
    if load_only:
        command.append("--load-only")
    started = time.perf_counter()
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1]), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", type=Path, default=Path("/tmp/seq2seq_bench/reference"))
    parser.add_argument("--export-dir", type=Path, default=None,
                        help="[RUN_DIR's name + _onnx, beside it]")
    parser.add_argument("--batches", default="64,1", help="sentences per batch, comma-separated")
    parser.add_argument("--beams", default="5,1", help="beam sizes, comma-separated (1 = greedy)")
    parser.add_argument("--limit", type=int, default=0, help="first N test sentences [all]")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--load-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    beams = [int(b) for b in args.beams.split(",")]
    if args.child is not None:
        print(json.dumps(child(args.child, args.threads, batches, beams, args.limit,
                               args.load_only)))
        return
    import onnxruntime
    import torch

    export_dir = args.export_dir or args.run_dir.with_name(args.run_dir.name + "_onnx")
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": f"{platform.processor() or platform.machine()}, {args.threads} "
                         f"thread(s), torch {torch.__version__}, onnxruntime "
                         f"{onnxruntime.__version__}",
              "run": str(args.run_dir), **export(args.run_dir, export_dir), "backends": {}}
    for backend in args.backends.split(","):
        where = model_path(backend, args.run_dir, export_dir)
        loaded, startup = run_child(where, args, load_only=True)
        measured, _ = run_child(where, args, load_only=False)
        result["backends"][backend] = {"size_mib": size_mib(backend, where),
                                       "startup_seconds": round(startup, 2),
                                       "loaded_in_process_seconds": loaded["loaded_seconds"],
                                       **measured}
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
