#!/usr/bin/env python
"""Run the start-up probe of ``auto`` mixed precision for a config's model, a few times.

    python bench/precision_probe.py                              # bench/reference_en_de.yaml
    python bench/precision_probe.py --config configs/demo_es_en.yaml --repeats 5

Builds the config's model (vocabulary sizes from ``tokenizer.vocab_size``; no data is read)
and times its matrix products in float32 and bfloat16 as ``training.cpu_amp: auto`` and
``decoding.amp: auto`` do (seq2seq/precision.py), for training (forward + backward at the
training batch's rows) and for decoding (forward at batch x beam rows). The probe runs even
on a CPU without bfloat16 hardware, where ``auto`` itself skips it; nothing is cached.
Prints JSON: per mode and repeat, GFLOP/s in each precision, the ratio, what ``auto`` would
pick, and how long the probe took.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def build_model(config):
    vocab = config.tokenizer.vocab_size
    if config.task == "translation":
        from seq2seq.models.translation import TranslationModel
        return TranslationModel(config.model, vocab, vocab)
    if config.task == "classification":
        from seq2seq.models.classification import ClassificationModel
        return ClassificationModel(config.model, vocab, 2)
    from seq2seq.models.language_model import LanguageModel
    return LanguageModel(config.model, vocab)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "bench" / "reference_en_de.yaml")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="0 = every core")
    args = parser.parse_args()

    from seq2seq import precision
    from seq2seq.config import load_config
    from seq2seq.runtime import configure_threads, cpu_bf16_hardware

    config = load_config(args.config)
    threads = configure_threads(args.threads)
    model = build_model(config)
    t, d = config.training, config.decoding
    modes = {"training": (True, precision.probe_rows(t.batch_size, t.batch_tokens)),
             f"decoding beam {d.beam_size}": (False, precision.probe_rows(
                 d.batch_size, d.batch_tokens, d.beam_size))}
    if d.beam_size > 1:
        modes["decoding greedy"] = (False, precision.probe_rows(d.batch_size, d.batch_tokens))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "cpu": precision.cpu_model_name(), "bf16_hardware_flag": cpu_bf16_hardware(),
              "threads": threads, "config": str(args.config), "load_before": load, "modes": {}}
    for mode, (training, rows) in modes.items():
        products = precision.model_products(model, rows)
        runs = []
        for _ in range(args.repeats):
            m = precision.measure_products(products, training)
            runs.append({"float32_gflops": round(m.float32, 2),
                         "bfloat16_gflops": round(m.bfloat16, 2), "ratio": round(m.ratio, 2),
                         "choice": ("bfloat16" if precision.prefers_bfloat16(m.float32, m.bfloat16)
                                    else "float32"),
                         "seconds": round(m.seconds, 2)})
        result["modes"][mode] = {"rows": rows, "products": len(products), "runs": runs}
    result["load_after"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    try:
        result["uptime"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        pass
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
