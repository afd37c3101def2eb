#!/usr/bin/env python
"""Does torch.compile of the decoder's teacher-forced step pay on CPU? (reference model, float32)

    python bench/compiled_step.py --mode plain     # the decoder as it is
    python bench/compiled_step.py --mode manual    # the same step written out (same losses)
    python bench/compiled_step.py --mode compile   # that step under torch.compile(dynamic=True)

Trains --steps steps after --warmup ones from the run's weights, 2 threads, and prints target
tokens/s and the last step's loss. Run alternately, with nothing else running.
"""
import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from rich.console import Console

from seq2seq.config import load_config
from seq2seq.run_directory import RunDirectory, load_weights
from seq2seq.runtime import configure_threads
from seq2seq.tasks.translation import TranslationTask
from seq2seq.training.optim import build_optimizer

p = argparse.ArgumentParser()
p.add_argument("--run-dir", default="/tmp/seq2seq_bench/reference")
p.add_argument("--mode", default="plain")  # plain | compile | manual
p.add_argument("--steps", type=int, default=40)
p.add_argument("--warmup", type=int, default=15)
args = p.parse_args()
configure_threads(2)
run = RunDirectory(Path(args.run_dir))
config = load_config(run.config_path, [])
task = TranslationTask.setup(config, run, True, torch.device("cpu"), Console(quiet=True))
model = task.model
load_weights(model, run.path / "model.safetensors")
model.train()
torch.manual_seed(0)
opt = build_optimizer(model.parameters(), config.training)
batches = task.train_batches(0)
dec = model.decoder

if args.mode in ("compile", "manual"):
    import torch.nn.functional as F

    from seq2seq.models.attention import additive_scores
    def step_fn(gates_t, feed, hidden, memory, keys, mask, feed_weight, w_hh, b_hh, wq, v, wc, bc):
        h = torch.gru_cell(feed, hidden[0], feed_weight, w_hh, gates_t, b_hh)
        q = F.linear(h, wq).unsqueeze(1)
        scores = additive_scores(q, keys, v).masked_fill(~mask.unsqueeze(1), float("-inf"))
        w = torch.softmax(scores, -1)
        ctx = torch.bmm(w, memory)
        comb = torch.cat([h.unsqueeze(1), ctx], -1)
        if dec.training:
            keep = torch.rand_like(comb) >= dec.output_dropout.p
            comb = comb * keep * (1.0 / (1.0 - dec.output_dropout.p))
        out = torch.tanh(F.linear(comb, wc, bc)).squeeze(1)
        return out, h.unsqueeze(0), None
    cstep = torch.compile(step_fn, dynamic=True) if args.mode == "compile" else step_fn

    def forward(embedded, state, return_attention=False):
        gates = dec.input_gates(embedded)
        fw = dec.feed_weight()
        outs = []
        weights = (dec.rnn.weight_hh_l0, dec.rnn.bias_hh_l0, dec.attention.query_layer.weight,
                   dec.attention.energy_layer.weight[0], dec.combine.weight, dec.combine.bias)
        s = state.source
        hidden, feed = state.hidden, state.feed
        if feed is None:
            feed = gates.new_zeros(gates.size(0), dec.hidden_size)
        for g in gates.unbind(1):
            feed, hidden, _ = cstep(g, feed, hidden, s.memory, s.keys, s.mask, fw, *weights)
            outs.append(feed)
        from dataclasses import replace
        return torch.stack(outs, 1), replace(state, hidden=hidden, feed=feed), None
    dec.forward = forward

def steps(first, n):
    tok = 0
    for i in range(first, first + n):
        b = task.make_batch(batches[i], torch.device("cpu"))
        loss, _, pred = task.loss(b, i)
        (loss / max(pred, 1)).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.training.clip_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        tok += pred
    return tok, float(loss)

t = time.perf_counter()
steps(0, args.warmup)
print(f"warmup {args.warmup} steps {time.perf_counter() - t:.1f} s", flush=True)
t = time.perf_counter()
tok, last = steps(args.warmup, args.steps)
dt = time.perf_counter() - t
print(f"{args.mode}: {tok/dt:.1f} target tokens/s over {args.steps} steps, last loss {last:.5f}")
