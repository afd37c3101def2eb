#!/usr/bin/env python
"""Throughput of trained classification and language-model runs (texts/s, tokens/s).

    python bench/throughput.py classify runs/sst2_bilstm --data ../shared/data/sst2/dev.tsv
    python bench/throughput.py generate runs/shakespeare_char_lstm --max-tokens 500

classify: inference texts/s and tokens/s on the file's texts (batch 64, after one warm-up
pass), and training texts/s from the run's metrics.jsonl with tokens/s = texts/s x the mean
tokens per training text. generate: sampled tokens/s with batch 1 and batch 32 (one prompt,
``--num-samples`` 1 and 32), after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def classify(run_dir: Path, data: Path, batch_size: int) -> dict:
    from seq2seq import Classifier
    from seq2seq.data.classification import encode_texts, load_labeled, load_split

    classifier = Classifier.from_pretrained(run_dir, device="cpu")
    config = classifier.config
    texts = list(load_labeled(config.data, str(data)).texts["text"])
    classifier.probabilities(texts[:batch_size], batch_size)  # warm-up
    started = time.perf_counter()
    classifier.probabilities(texts, batch_size)
    seconds = time.perf_counter() - started
    ids, _ = encode_texts(classifier.tokenizer, texts, config.data.max_length,
                          config.data.truncation)
    tokens = sum(len(row) + 1 for row in ids)  # + </s>
    train = load_split(config.data, "train", config.training.seed)
    sample = list(train.texts.select(range(min(5000, len(train))))["text"])
    sample_ids, _ = encode_texts(classifier.tokenizer, sample, config.data.max_length,
                                 config.data.truncation)
    per_text = float(np.mean([len(row) + 1 for row in sample_ids]))
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    speeds = [r["texts_per_s"] for r in rows if r["type"] == "train"][1:]
    train_texts = float(np.median(speeds)) if speeds else None
    return {"inference": {"texts": len(texts), "seconds": round(seconds, 3),
                          "texts_per_s": round(len(texts) / seconds, 1),
                          "tokens_per_s": round(tokens / seconds, 1), "batch_size": batch_size},
            "training": {"texts_per_s": round(train_texts, 1) if train_texts else None,
                         "mean_tokens_per_text": round(per_text, 1),
                         "tokens_per_s": round(train_texts * per_text, 1) if train_texts else None}}


def generate(run_dir: Path, max_tokens: int) -> dict:
    from seq2seq import Generator

    generator = Generator.from_pretrained(run_dir, device="cpu")
    condition = generator.conditions.labels[0] if generator.conditions else None
    results = {}
    for batch in (1, 32):
        generator.generate("", max_tokens=20, num_samples=batch, seed=0, condition=condition)
        started = time.perf_counter()
        found = generator.generate("", max_tokens=max_tokens, num_samples=batch, seed=0,
                                   condition=condition)
        seconds = time.perf_counter() - started
        tokens = sum(g.tokens for g in found)
        results[f"batch_{batch}"] = {"tokens": tokens, "seconds": round(seconds, 3),
                                     "tokens_per_s": round(tokens / seconds, 1)}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["classify", "generate"])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--data", type=Path)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=500)
    args = parser.parse_args()
    result = {"run_dir": str(args.run_dir), "threads": torch.get_num_threads(),
              "torch": torch.__version__}
    if args.what == "classify":
        result.update(classify(args.run_dir, args.data, args.batch_size))
    else:
        result.update(generate(args.run_dir, args.max_tokens))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
