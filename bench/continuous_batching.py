"""What a server's batching can reach, in one process without HTTP.

C clients each send one sentence and send the next as soon as it is answered (a closed
loop, answers arriving at once). Two ways to batch them:

- whole: take the C waiting sentences as one batch, translate it to its end, answer all
  (``Translator.translate_n_best``; a batch's last, longest sentences run on alone);
- continuous: one running search; a sentence is answered when its own search is done and
  the client's next sentence joins at the next step (``Translator.continuous_batch``).

Both against offline translation of the same sentences (batches of 64 sorted by length).
Every way gives the same translations (checked). Usage:

    python bench/continuous_batching.py /tmp/seq2seq_bench/reference --clients 32 --threads 1,2
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from seq2seq import Translator

ROOT = Path(__file__).resolve().parents[1]


def whole(translator: Translator, sentences: list[str], clients: int, beam: int) -> list[str]:
    out: list[str] = []
    for start in range(0, len(sentences), clients):
        found = translator.translate_n_best(sentences[start:start + clients], beam_size=beam)
        out += [hyps[0].text for hyps in found]
    return out


def continuous(translator: Translator, sentences: list[str], clients: int, beam: int
               ) -> list[str]:
    batch = translator.continuous_batch(beam_size=beam)
    out: dict[int, str] = {}
    sent = min(clients, len(sentences))
    batch.add(sentences[:sent])
    while len(batch):
        done = batch.step()
        out.update((i, hyps[0].text) for i, hyps in done)
        more = min(len(done), len(sentences) - sent)
        if more:  # each answered client sends its next sentence
            batch.add(sentences[sent:sent + more])
            sent += more
    return [out[i] for i in range(len(sentences))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--input", type=Path,
                        default=ROOT.parent / "shared/data/multi30k/test_2016_flickr.en")
    parser.add_argument("--sentences", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    sentences = args.input.read_text(encoding="utf-8").splitlines()[: args.sentences]
    translator = Translator.from_pretrained(args.run_dir, device="cpu")
    ways = {"offline (batches of 64 sorted by length)":
            lambda: [h[0].text for h in translator.translate_n_best(sentences,
                                                                    beam_size=args.beam_size)],
            f"whole batches of {args.clients}":
            lambda: whole(translator, sentences, args.clients, args.beam_size),
            f"continuous, {args.clients} clients":
            lambda: continuous(translator, sentences, args.clients, args.beam_size)}
    results: dict[str, list[float]] = {}
    reference: list[str] | None = None
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        for _ in range(args.rounds):
            for name, way in ways.items():
                start = time.perf_counter()
                out = way()
                rate = len(sentences) / (time.perf_counter() - start)
                reference = reference or out
                differ = sum(a != b for a, b in zip(out, reference))
                key = f"{name}, {threads} thread{'s' if threads > 1 else ''}"
                results.setdefault(key, []).append(round(rate, 1))
                print(f"{key}: {rate:.1f} sentences/s"
                      + (f" ({differ} translations differ)" if differ else ""), flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
