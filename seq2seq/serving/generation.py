"""The generation service: ``POST /v1/generate``, optionally streamed.

A generation is never batched with another request's: each has its own seed (sampling
draws from one random stream per call) and its own streaming callback.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable
from typing import Any

from ..errors import UserError
from ..generator import Generation, Generator
from .batching import Job
from .schemas import GenerateRequest, Limits, RequestError, check_chars, check_range


class GenerationService:
    Request = GenerateRequest

    def __init__(self, name: str, generator: Generator, limits: Limits) -> None:
        self.name = name
        self.generator = generator
        self.limits = limits

    def describe(self) -> dict[str, Any]:
        conditions = self.generator.conditions
        defaults = self.generator.config.generation
        return {"conditions": None if conditions is None else (
                    list(conditions.labels) if conditions.kind == "label"
                    else f"{conditions.size} features"),
                "mode": self.generator.config.data.lm_mode,
                "defaults": {"max_tokens": min(defaults.max_tokens, self.limits.max_tokens),
                             "temperature": defaults.temperature, "top_k": defaults.top_k,
                             "top_p": defaults.top_p}}

    def options(self, body: GenerateRequest) -> dict[str, Any]:
        """The generation options of ``body``, checked (raises RequestError naming the field)."""
        check_chars(body.prompt, self.limits, "prompt")
        if body.condition is not None:
            check_chars(body.condition, self.limits, "condition")
        check_range(body.max_tokens, "max_tokens", 1, self.limits.max_tokens)
        check_range(body.top_k, "top_k", 0)
        check_range(body.num_samples, "num_samples", 1, self.limits.max_samples)
        check_range(body.seed, "seed", 0, 2**63 - 1)
        if body.temperature is not None and not 0 < body.temperature < float("inf"):
            raise RequestError("temperature", f"must be > 0, got {body.temperature}")
        if body.top_p is not None and not 0 < body.top_p <= 1:
            raise RequestError("top_p", f"must be in (0, 1], got {body.top_p}")
        max_tokens = body.max_tokens or min(self.generator.config.generation.max_tokens,
                                            self.limits.max_tokens)
        options = dict(max_tokens=max_tokens, temperature=body.temperature, top_k=body.top_k,
                       top_p=body.top_p, greedy=body.greedy, num_samples=body.num_samples)
        try:
            chosen = self.generator.generation_options(**options)
        except UserError as err:  # "... name (--flag) ...": name the field, drop the CLI flag
            message = str(err)
            named = re.search(r"(\w+) \(--[\w-]+\)", message)
            raise RequestError(named.group(1) if named else "options",
                               re.sub(r" \(--[\w-]+\)", "", message)) from None
        if chosen.beam_size > self.limits.max_beam_size:
            raise RequestError("model", f"its generation.beam_size ({chosen.beam_size}) is over "
                               f"this server's limit ({self.limits.max_beam_size})")
        if body.stream and chosen.num_samples > 1:
            raise RequestError("stream", "streams one sample: leave num_samples at 1")
        try:
            self.generator._condition(body.condition)
        except UserError as err:
            raise RequestError("condition", str(err)) from None
        return options

    def prepare(self, body: GenerateRequest,
                on_token: Callable[[int, str], None] | None = None) -> Job:
        options = self.options(body)
        return Job(None, [(body.prompt, body.condition, body.seed, options, on_token)],
                   cost=options["max_tokens"])

    def run(self, key: Hashable, inputs: list[Any]) -> list[list[Generation]]:
        return [self.generator.generate(prompt, seed=seed, condition=condition,
                                        on_token=on_token, **options)
                for prompt, condition, seed, options, on_token in inputs]

    def respond(self, body: GenerateRequest, outputs: list[list[Generation]]) -> dict[str, Any]:
        return {"model": self.name, "samples": [
            {"text": g.text, "continuation": g.continuation, "tokens": g.tokens,
             "finished": g.finished, "log_prob": g.log_prob, "seed": g.seed}
            for g in outputs[0]]}
