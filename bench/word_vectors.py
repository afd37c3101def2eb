#!/usr/bin/env python
"""Train word vectors (skip-gram with negative sampling, word2vec's recipe) on review text.

    python bench/word_vectors.py --out runs/review_vectors.txt     # what configs/sst2_bilstm.yaml reads

The default corpus is the text of IMDB's 50,000 reviews (train and test; their labels are not
read) plus the SST-2 training sentences, all tokenized the way SST-2 is (lowercased, Penn
Treebank style: "does n't", "film 's", punctuation split off); 13.6M tokens. The vectors are
written in the word2vec text format that `model.pretrained_embeddings` reads, most frequent
word first (the order in which `tokenizer.add_vector_words` adds them to a vocabulary).

Only torch and numpy; 23 minutes for 5 epochs on one core of a busy 2-core machine.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import math
import re
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"

_CLITIC = re.compile(r"(\w)(n't|'s|'re|'ve|'ll|'d|'m)\b")
_PUNCT = re.compile(r"(\.\.\.|--|[.,!?;:()])")
_BRACKETS = {"(": "-lrb-", ")": "-rrb-"}


def sst_tokens(text: str) -> list[str]:
    """Lowercase and split ``text`` roughly as SST-2's Penn Treebank tokenization does."""
    text = text.replace("<br />", " ").replace('"', " ").lower()
    text = _PUNCT.sub(r" \1 ", _CLITIC.sub(r"\1 \2", text))
    return [_BRACKETS.get(t, t) for t in text.split()]


def read_texts(imdb: list[Path], sst: list[Path]) -> list[list[str]]:
    """Token lists of every IMDB review (CSV column ``text``) and SST-2 sentence (TSV ``sentence``)."""
    docs = []
    for path in imdb:
        with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
            docs += [sst_tokens(row["text"]) for row in csv.DictReader(f)]
    for path in sst:
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            docs += [row["sentence"].split() for row in reader]
    return docs


def skipgram_pairs(stream: np.ndarray, doc: np.ndarray, window: int,
                   rng: np.random.Generator) -> np.ndarray:
    """(center, context) pairs of one epoch, shuffled: (n, 2) int64.

    word2vec's dynamic window (a context d words away is kept with probability (window-d+1)/window),
    never across a document boundary.
    """
    pairs = []
    for d in range(1, window + 1):
        same = (doc[:-d] == doc[d:]) & (rng.random(len(stream) - d) < (window - d + 1) / window)
        left, right = stream[:-d][same], stream[d:][same]
        pairs += [np.stack([left, right], 1), np.stack([right, left], 1)]
    pairs = np.concatenate(pairs)
    return pairs[rng.permutation(len(pairs))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True,
                        help="vectors file to write (word2vec text format)")
    parser.add_argument("--imdb", type=Path, nargs="*",
                        default=[SHARED / "imdb" / "train.csv.gz", SHARED / "imdb" / "test.csv.gz"])
    parser.add_argument("--sst", type=Path, nargs="*", default=[SHARED / "sst2" / "train.tsv"])
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--window", type=int, default=5)
    parser.add_argument("--negatives", type=int, default=5)
    parser.add_argument("--min-count", type=int, default=3)
    parser.add_argument("--subsample", type=float, default=1e-4,
                        help="word2vec's t for dropping frequent words")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--lr", type=float, default=0.025)
    parser.add_argument("--threads", type=int, default=0, help="0 = all cores")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)  # the negatives
    rng = np.random.default_rng(args.seed)

    started = time.perf_counter()
    docs = read_texts(args.imdb, args.sst)
    counts = Counter(t for d in docs for t in d)
    words = sorted((w for w, c in counts.items() if c >= args.min_count), key=lambda w: (-counts[w], w))
    index = {w: i for i, w in enumerate(words)}
    freq = np.array([counts[w] for w in words], dtype=np.float64)
    ids = [np.array([index[t] for t in d if t in index], dtype=np.int64) for d in docs]
    stream = np.concatenate(ids)
    doc = np.repeat(np.arange(len(ids)), [len(a) for a in ids])
    print(f"{len(docs):,} texts, {len(stream):,} tokens, {len(words):,} words with count >= "
          f"{args.min_count} ({time.perf_counter() - started:.0f} s)", flush=True)

    share = freq / freq.sum()
    keep_probability = np.minimum(1.0, np.sqrt(args.subsample / share) + args.subsample / share)

    vocab, dim = len(words), args.dim
    # Plain SGD written out by hand (no autograd): the gradients of the loss are two lines each,
    # and index_add_ sums the updates of a word that occurs several times in a batch.
    center_vectors = (torch.rand(vocab, dim) - 0.5) / dim
    context_vectors = torch.zeros(vocab, dim)
    negative_table = torch.from_numpy(rng.choice(vocab, 10_000_000, p=freq ** 0.75 / (freq ** 0.75).sum()))
    k = args.negatives
    for epoch in range(1, args.epochs + 1):
        kept = rng.random(len(stream)) < keep_probability[stream]
        pairs = torch.from_numpy(skipgram_pairs(stream[kept], doc[kept], args.window, rng))
        batches = math.ceil(len(pairs) / args.batch_size)
        total, epoch_start = 0.0, time.perf_counter()
        for b in range(batches):
            # linear decay over the whole run, as word2vec does
            progress = ((epoch - 1) * batches + b) / (args.epochs * batches)
            lr = args.lr * max(1.0 - progress, 1e-4)
            centers, contexts = pairs[b * args.batch_size:(b + 1) * args.batch_size].T
            negatives = negative_table[torch.randint(len(negative_table), (len(centers) * k,))]
            u = center_vectors.index_select(0, centers)                                   # (B, D)
            v = context_vectors.index_select(0, contexts)                                 # (B, D)
            n = context_vectors.index_select(0, negatives).view(len(centers), k, dim)     # (B, K, D)
            positive = (u * v).sum(1)                                                     # (B,)
            negative = (n * u.unsqueeze(1)).sum(2)                                        # (B, K)
            total -= (F.logsigmoid(positive).mean() + F.logsigmoid(-negative).sum(1).mean()).item()
            # d loss / d score: sigmoid(s) - 1 for the true context, sigmoid(s) for a negative
            g_positive = (torch.sigmoid(positive) - 1).unsqueeze(1)                        # (B, 1)
            g_negative = torch.sigmoid(negative).unsqueeze(2)                              # (B, K, 1)
            g_center = g_positive * v + (g_negative * n).sum(1)
            context_vectors.index_add_(0, contexts, g_positive * u, alpha=-lr)
            context_vectors.index_add_(0, negatives, (g_negative * u.unsqueeze(1)).view(-1, dim), alpha=-lr)
            center_vectors.index_add_(0, centers, g_center, alpha=-lr)
        print(f"epoch {epoch}: {len(pairs):,} pairs, loss {total / batches:.4f}, "
              f"{time.perf_counter() - epoch_start:.0f} s", flush=True)

    vectors = center_vectors.numpy()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    temporary = args.out.with_name(args.out.name + ".tmp")
    with open(temporary, "w", encoding="utf-8") as f:
        f.write(f"{vocab} {dim}\n")
        for word, row in zip(words, vectors):
            f.write(word + " " + " ".join(f"{x:.5f}" for x in row) + "\n")
    temporary.replace(args.out)
    print(f"wrote {args.out} ({vocab:,} x {dim}) in {time.perf_counter() - started:.0f} s total")


if __name__ == "__main__":
    sys.exit(main())
