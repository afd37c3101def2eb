"""Mixed precision's ``auto``: bfloat16 on a CPU only where it measures faster for this model.

Whether bfloat16 autocast pays on a CPU depends on the chip and on the matrix shapes: on an
AMD EPYC it runs this project's models about twice as fast as float32; on a Xeon with
AVX512-BF16 but no AMX it is slower. So ``auto`` times the model's own matrix products (every
``nn.Linear`` and recurrent weight, at the row count of a batch) in float32 and in bfloat16
for about a second, and picks bfloat16 only when it is at least ``BF16_MARGIN`` faster.
Training times forward and backward, decoding forward only.

The verdict is cached per machine and shape set in ``precision-<key>.json`` under the user
cache directory (``$SEQ2SEQ_CACHE_DIR``, else ``$XDG_CACHE_HOME/seq2seq``, else
``~/.cache/seq2seq``), and per process in memory, so it is measured once. A cache that
cannot be read or written is ignored (measured again). CUDA's ``auto`` is float16 without a
probe; a CPU without bfloat16 hardware is float32 without one.

The float32 products have a choice too: ATen's (MKL on x86) or oneDNN's
(``models.functional.onednn_products``). On an AMD EPYC with AVX-512 oneDNN multiplies the
shapes of a training step 2.2-2.5x as fast; elsewhere it may not. ``resolve_float32_products``
times the same products both ways (once per machine, cached as above) and picks oneDNN when it
is at least ``ONEDNN_MARGIN`` faster; ``auto`` then weighs bfloat16 against that float32.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .files import atomic_write_text
from .models.functional import PACKING_AVAILABLE, linear, onednn_products
from .runtime import cpu_bf16_hardware, limit_onednn_kernels

BF16_MARGIN = 0.10  # bfloat16 must do at least 10 % more GFLOP/s than float32 to be chosen
ONEDNN_MARGIN = 0.10  # oneDNN's float32 products must be at least 10 % faster than ATen's
PROBE_SECONDS = 1.0  # timed rounds (after warm-up) stop after this long ...
PRODUCTS_PROBE_SECONDS = 0.3  # ... for float32's two products (their gap is large or moot)
MIN_ROUNDS = 1  # ... but not before this many rounds (the sizing sample adds one)
MAX_ROUNDS = 50
MIN_SAMPLE_SECONDS = 0.02  # one timed sample repeats the products to last at least this long
TYPICAL_SENTENCE_TOKENS = 25  # rows of a token-budget batch: budget / this
CACHE_VERSION = 2

# One matrix product of the model: x [rows, inputs] times a weight [outputs, inputs]^T.
Product = tuple[int, int, int]


@dataclass(frozen=True)
class Measurement:
    """The probe's figures: GFLOP/s of the model's products in each precision."""

    float32: float
    bfloat16: float
    seconds: float  # how long the probe took

    @property
    def ratio(self) -> float:
        return self.bfloat16 / self.float32


@dataclass(frozen=True)
class Float32Measurement:
    """The float32 probe's figures: GFLOP/s of the model's products with ATen's and oneDNN's."""

    aten: float
    onednn: float
    seconds: float

    @property
    def ratio(self) -> float:
        return self.onednn / self.aten


@dataclass(frozen=True)
class ProductsChoice:
    """Whose float32 products a model runs (``onednn_products``), and a one-line account."""

    onednn: bool
    line: str
    measurement: Float32Measurement | None = None
    cached: bool = False


@dataclass(frozen=True)
class PrecisionChoice:
    """What a mixed-precision switch resolved to, and a one-line account of why."""

    enabled: bool  # autocast on
    name: str  # the precision of the matrix products: "bfloat16", "float16" or "float32"
    line: str
    auto: bool = False  # decided by ``auto`` (not set true or false)
    measurement: Measurement | None = None
    cached: bool = False  # the measurement came from the cache file


def prefers_bfloat16(float32: float, bfloat16: float, margin: float = BF16_MARGIN) -> bool:
    """Whether measured throughputs (any unit, higher is faster) favour bfloat16 clearly."""
    return bfloat16 >= float32 * (1.0 + margin)


def probe_rows(batch_size: int, batch_tokens: int = 0, beams: int = 1) -> int:
    """A representative row count for the products: the sentences of a batch (times beams)."""
    rows = batch_tokens // TYPICAL_SENTENCE_TOKENS if batch_tokens > 0 else batch_size
    return max(1, rows) * max(1, beams)


def model_products(model: nn.Module, rows: int) -> list[Product]:
    """The matrix products that dominate ``model``'s time, at ``rows`` rows: one per
    ``nn.Linear`` (a vector-valued one: the 1-wide attention energies run in float32 anyway)
    and one per recurrent weight (input and hidden projections of every layer and direction)."""
    products = []
    for module in model.modules():
        if isinstance(module, nn.Linear) and module.out_features > 1:
            products.append((rows, module.in_features, module.out_features))
        elif isinstance(module, nn.RNNBase):
            for name, weight in module.named_parameters(recurse=False):
                if name.startswith("weight_"):
                    products.append((rows, weight.shape[1], weight.shape[0]))
    return sorted(products)


# ---- the probe ----

def measure_products(products: list[Product], training: bool, seconds: float | None = None,
                     timer: Callable[[], float] = time.perf_counter) -> Measurement:
    """Time ``products`` in float32 and under bfloat16 autocast on the CPU -> GFLOP/s of each.

    One pass runs every product once (and, for ``training``, its backward: the gradients of
    input and weight, 3x the forward's work; the float32 weights are cast at every pass, as at
    every training step). Decoding keeps the bfloat16 weights, as autocast caches them for a
    whole search. The float32 products are the ones in force (``onednn_products``). Both
    precisions are warmed up first (oneDNN builds its kernels at first use), then timed in
    alternation, so a change in load hits both; the best sample counts.
    """
    gflops, spent = _race(products, training, {
        "float32": (contextlib.nullcontext, False),
        "bfloat16": (lambda: torch.autocast("cpu", dtype=torch.bfloat16), True)},
        seconds, timer)
    return Measurement(float32=gflops["float32"], bfloat16=gflops["bfloat16"], seconds=spent)


def measure_float32_products(products: list[Product], training: bool,
                             seconds: float | None = None,
                             timer: Callable[[], float] = time.perf_counter
                             ) -> Float32Measurement:
    """Time ``products`` in float32 with ATen's products and with oneDNN's, as
    ``measure_products`` does -> GFLOP/s of each."""
    gflops, spent = _race(products, training, {
        "aten": (lambda: onednn_products(False), False),
        "onednn": (lambda: onednn_products(True), False)},
        PRODUCTS_PROBE_SECONDS if seconds is None else seconds, timer)
    return Float32Measurement(aten=gflops["aten"], onednn=gflops["onednn"], seconds=spent)


def _race(products: list[Product], training: bool,
          variants: dict[str, tuple[Callable[[], contextlib.AbstractContextManager[Any]], bool]],
          seconds: float | None, timer: Callable[[], float]) -> tuple[dict[str, float], float]:
    """GFLOP/s of ``products`` in each variant: name -> (the context it runs in, whether
    decoding keeps bfloat16 copies of the weights), and the seconds the race took."""
    started = timer()
    if training:  # the same oneDNN kernel cache as a training process (see mixed_precision)
        limit_onednn_kernels()
    generator = torch.Generator().manual_seed(0)  # leave the global RNG (training seeds) alone
    weights = {(k, n): (torch.randn(n, k, generator=generator) / math.sqrt(k)).requires_grad_()
               for _, k, n in products}
    inputs = {(m, k): torch.randn(m, k, generator=generator).requires_grad_(training)
              for m, k, _ in products}
    low_weights = {shape: w.detach().to(torch.bfloat16) for shape, w in weights.items()}

    def one_pass(name: str) -> None:
        context, keeps_low = variants[name]
        with torch.set_grad_enabled(training), context():
            used = low_weights if keeps_low and not training else weights
            outputs = [linear(inputs[m, k], used[k, n]) for m, k, n in products]
        if training:
            torch.autograd.backward(outputs, [torch.ones_like(y) for y in outputs])
            for tensor in (*weights.values(), *inputs.values()):
                tensor.grad = None

    best = dict.fromkeys(variants, math.inf)  # seconds per pass

    def sample(name: str, repeats: int) -> float:
        begin = timer()
        for _ in range(repeats):
            one_pass(name)
        per_pass = (timer() - begin) / repeats
        best[name] = min(best[name], per_pass)
        return per_pass

    for name in variants:  # warm-up: oneDNN builds its kernels at first use
        one_pass(name)
    warm = max(sample(name, 1) for name in variants)  # a warm pass's length sizes the samples
    repeats = max(1, math.ceil(MIN_SAMPLE_SECONDS / max(warm, 1e-6)))
    deadline = timer() + (PROBE_SECONDS if seconds is None else seconds)
    rounds = 0
    while rounds < MIN_ROUNDS or (rounds < MAX_ROUNDS and timer() < deadline):
        for name in variants:
            sample(name, repeats)
        rounds += 1
    flops = sum(2 * m * k * n for m, k, n in products) * (3 if training else 1)
    return {name: flops / best[name] / 1e9 for name in variants}, timer() - started


# ---- the cache ----

def cache_dir() -> Path | None:
    """Where measurements are kept: $SEQ2SEQ_CACHE_DIR, $XDG_CACHE_HOME/seq2seq or
    ~/.cache/seq2seq (None when no home directory is known)."""
    if os.environ.get("SEQ2SEQ_CACHE_DIR"):
        return Path(os.environ["SEQ2SEQ_CACHE_DIR"])
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if os.path.isabs(xdg):
        return Path(xdg) / "seq2seq"
    try:
        return Path.home() / ".cache" / "seq2seq"
    except RuntimeError:
        return None


def cpu_model_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def cache_key(products: list[Product], training: bool, threads: int | None = None,
              question: str = "precision", onednn: bool = False) -> dict[str, Any]:
    """What a measurement holds for: this CPU, torch, thread count, mode and shape set, the
    question (``precision`` or ``float32 products``) and, for precision, whose float32
    products it weighed bfloat16 against."""
    shapes = json.dumps(sorted(products)).encode()
    return {"cpu": cpu_model_name(), "torch": torch.__version__,
            "threads": torch.get_num_threads() if threads is None else threads,
            "mode": "training" if training else "decoding",
            "shapes": hashlib.sha256(shapes).hexdigest()[:16], "question": question,
            "float32": "onednn" if onednn else "aten"}


def cache_path(key: dict[str, Any]) -> Path | None:
    directory = cache_dir()
    if directory is None:
        return None
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    prefix = "precision" if key.get("question") == "precision" else "products"
    return directory / f"{prefix}-{digest}.json"


def read_cached(path: Path | None, key: dict[str, Any], names: tuple[str, ...]
                ) -> tuple[dict[str, float], float] | None:
    """The GFLOP/s stored for ``key`` (one per name) and the probe's seconds, or None if
    there are none usable (any failure)."""
    if path is None:
        return None
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
        if entry.get("version") != CACHE_VERSION or entry.get("key") != key:
            return None
        figures = {name: float(entry[f"{name}_gflops"]) for name in names}
        seconds = float(entry["seconds"])
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    if not all(math.isfinite(x) and x > 0 for x in figures.values()):
        return None
    return figures, seconds


def write_cached(path: Path | None, key: dict[str, Any], figures: dict[str, float],
                 seconds: float) -> None:
    """Store a measurement; a cache that cannot be written is no error (measured again)."""
    if path is None:
        return
    entry: dict[str, Any] = {"version": CACHE_VERSION, "key": key}
    entry.update({f"{name}_gflops": round(value, 3) for name, value in figures.items()})
    entry.update(seconds=round(seconds, 3),
                 measured=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    try:
        atomic_write_text(path, json.dumps(entry, indent=1) + "\n")
    except OSError:
        pass


# ---- the decision ----

_decided: dict[str, Any] = {}  # per process: cache file -> choice


def _measured(key: dict[str, Any], names: tuple[str, ...],
              measure: Callable[[], tuple[dict[str, float], float]]
              ) -> tuple[dict[str, float], float, bool, Path | None]:
    """The figures for ``key`` from the cache, else from ``measure()`` (then cached):
    (GFLOP/s by name, probe seconds, whether cached, the cache file)."""
    path = cache_path(key)
    stored = read_cached(path, key, names)
    if stored is not None:
        return stored[0], stored[1], True, path
    figures, seconds = measure()
    write_cached(path, key, figures, seconds)
    return figures, seconds, False, path


def _memo(key: dict[str, Any]) -> str:
    path = cache_path(key)
    return str(path) if path is not None else json.dumps(key, sort_keys=True)


def resolve_float32_products(setting: bool | str, device: torch.device, model: nn.Module, *,
                             training: bool, rows: int,
                             measure: Callable[[list[Product], bool], Float32Measurement]
                             | None = None) -> ProductsChoice:
    """Whether ``model``'s float32 products on ``device`` run in oneDNN (``setting``: true,
    false or ``auto``). ``auto``, on a CPU with oneDNN: when ``measure``
    (``measure_float32_products``) finds its products at least ``ONEDNN_MARGIN`` faster than
    ATen's on the model's shapes at ``rows`` rows. Measured once per machine and shape set
    (cached on disk) and once per process."""
    mode = "training" if training else "decoding"
    if device.type != "cpu" or not PACKING_AVAILABLE:
        why = device.type if device.type != "cpu" else "this torch has no oneDNN"
        return ProductsChoice(False, f"float32 products for {mode}: ATen's ({why})")
    if setting != "auto":
        verdict = "oneDNN's" if setting else "ATen's"
        option = "training.onednn" if training else "decoding.onednn"
        return ProductsChoice(bool(setting), f"float32 products for {mode}: {verdict} "
                              f"({option}: {'true' if setting else 'false'}, not auto)")
    products = model_products(model, rows)
    if not products:
        return ProductsChoice(False, f"float32 products for {mode}: ATen's (no matrix products)")
    key = cache_key(products, training, question="float32 products")
    memo = _memo(key)
    if memo not in _decided:
        def probe() -> tuple[dict[str, float], float]:
            m = (measure or measure_float32_products)(products, training)
            return {"aten": m.aten, "onednn": m.onednn}, m.seconds

        figures, seconds, cached, path = _measured(key, ("aten", "onednn"), probe)
        m = Float32Measurement(figures["aten"], figures["onednn"], seconds)
        onednn = m.onednn >= m.aten * (1.0 + ONEDNN_MARGIN)
        source = f"cached in {path}" if cached else f"measured in {m.seconds:.1f} s"
        verdict = ("oneDNN's" if onednn else "ATen's") + (
            f" (oneDNN {m.ratio:.2f}x ATen: {m.onednn:.1f} vs {m.aten:.1f} GFLOP/s on this "
            f"model's products; {source})")
        _decided[memo] = ProductsChoice(onednn, f"float32 products for {mode}: {verdict}", m,
                                        cached)
    choice: ProductsChoice = _decided[memo]
    return choice


def resolve_mixed_precision(setting: bool | str, device: torch.device, model: nn.Module, *,
                            training: bool, rows: int, onednn: bool = False,
                            measure: Callable[[list[Product], bool], Measurement] | None = None
                            ) -> PrecisionChoice:
    """A mixed-precision switch (true, false or ``auto``) for ``model`` on ``device``.

    ``auto``: float16 on CUDA; on a CPU bfloat16 when ``measure`` (``measure_products``)
    finds the model's products (at ``rows`` rows) at least ``BF16_MARGIN`` faster in it than
    in float32 (oneDNN's float32 products with ``onednn``, else ATen's), else float32.
    Measured once per machine and shape set (cached on disk) and once per process.
    """
    mode = "training" if training else "decoding"
    low = "float16" if device.type == "cuda" else "bfloat16"
    if setting != "auto":
        enabled = bool(setting)
        name = low if enabled else "float32"
        option = ("decoding.amp" if not training else
                  "training.amp" if device.type == "cuda" else "training.cpu_amp")
        return PrecisionChoice(enabled, name, f"precision for {mode}: {name} ({option}: "
                               f"{'true' if enabled else 'false'}, not auto)")
    if device.type == "cuda":
        return PrecisionChoice(True, "float16", f"precision auto for {mode}: float16 (CUDA)",
                               auto=True)
    if device.type != "cpu" or cpu_bf16_hardware() is False:
        why = "this CPU has no bfloat16 hardware" if device.type == "cpu" else device.type
        return PrecisionChoice(False, "float32",
                               f"precision auto for {mode}: float32 ({why}; not measured)",
                               auto=True)
    products = model_products(model, rows)
    if not products:
        return PrecisionChoice(False, "float32",
                               f"precision auto for {mode}: float32 (no matrix products)",
                               auto=True)
    key = cache_key(products, training, onednn=onednn)
    memo = _memo(key)
    if memo not in _decided:
        def probe() -> tuple[dict[str, float], float]:
            with onednn_products(onednn):
                m = (measure or measure_products)(products, training)
            return {"float32": m.float32, "bfloat16": m.bfloat16}, m.seconds

        figures, seconds, cached, path = _measured(key, ("float32", "bfloat16"), probe)
        measurement = Measurement(figures["float32"], figures["bfloat16"], seconds)
        _decided[memo] = _choice(mode, measurement, cached, path)
    choice: PrecisionChoice = _decided[memo]
    return choice


def _choice(mode: str, m: Measurement, cached: bool, path: Path | None) -> PrecisionChoice:
    enabled = prefers_bfloat16(m.float32, m.bfloat16)
    figures = f"{m.bfloat16:.1f} vs {m.float32:.1f} GFLOP/s on this model's products"
    source = f"cached in {path}" if cached else f"measured in {m.seconds:.1f} s"
    if enabled:
        verdict = f"bfloat16 ({m.ratio:.2f}x float32: {figures}; {source})"
    else:
        verdict = (f"float32 (bfloat16 {m.ratio:.2f}x float32, under the "
                   f"{1 + BF16_MARGIN:.2f}x it needs: {figures}; {source})")
    return PrecisionChoice(enabled, "bfloat16" if enabled else "float32",
                           f"precision auto for {mode}: {verdict}", True, m, cached)
