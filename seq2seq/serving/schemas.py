"""What a request may hold, the limits a server enforces, and the error a bad request gets.

Types are checked strictly (``"3"`` is not a number); ranges that depend on the server's
limits or on the model are checked by each head's service, which names the field at fault.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; every bound is a ``seq2seq serve`` option."""

    max_texts: int = 64  # texts per request
    max_chars: int = 2000  # characters per text (and per prompt)
    max_tokens: int = 512  # tokens generated per request
    max_body_bytes: int = 1_000_000  # size of a request body
    max_beam_size: int = 16  # beam_size (translation and generation)
    max_samples: int = 8  # num_samples (generation)


class RequestError(Exception):
    """A request the server refuses: HTTP ``status`` and ``{"error": "<field>: <message>"}``."""

    def __init__(self, field: str, message: str, status: int = 422) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.status = status


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    model: Optional[str] = Field(None, description="A served model's name (GET /v1/models); "
                                 "may be left out when one model of this kind is served.")


class TranslateRequest(_Body):
    texts: list[str] = Field(..., description="Sentences to translate.",
                             examples=[["¿Dónde está la estación?"]])
    beam_size: Optional[int] = Field(None, description="1 = greedy [the run's decoding config].")
    n_best: Optional[int] = Field(None, description="Translations returned per text (<= beam_size).")
    length_penalty: Optional[float] = Field(None, description="GNMT alpha, >= 0; 0 = none.")
    attention: bool = Field(False, description="Return the attention matrix of the best "
                            "translation, with the source and target pieces.")


class ClassifyRequest(_Body):
    texts: list[str] = Field(..., description="Texts to classify.", examples=[["a witty movie"]])
    top_k: int = Field(1, description="Most probable labels returned per text.")


class GenerateRequest(_Body):
    prompt: str = Field("", description="Text to continue (empty: from the start symbol).")
    condition: Optional[str] = Field(None, description="Conditioned models: the label (or "
                                     "comma-separated feature vector) to generate for.")
    max_tokens: Optional[int] = Field(None, description="Tokens to generate at most.")
    temperature: Optional[float] = Field(None, description="> 0; lower is more conservative.")
    top_k: Optional[int] = Field(None, description="Sample among the k most probable (0 = all).")
    top_p: Optional[float] = Field(None, description="Nucleus sampling, in (0, 1]; 1 = off.")
    greedy: Optional[bool] = Field(None, description="The most probable token at every step.")
    num_samples: Optional[int] = Field(None, description="Texts to generate.")
    seed: Optional[int] = Field(None, description="Same seed, same text [a fresh one, returned].")
    stream: bool = Field(False, description="Send the text as Server-Sent Events as it is "
                         "produced (one sample only).")


def check_texts(texts: list[str], limits: Limits, field: str = "texts") -> None:
    """1 to ``max_texts`` texts of at most ``max_chars`` characters each."""
    if not texts:
        raise RequestError(field, "give at least one text")
    if len(texts) > limits.max_texts:
        raise RequestError(field, f"{len(texts)} texts; at most {limits.max_texts} per request",
                           status=413)
    for i, text in enumerate(texts):
        check_chars(text, limits, f"{field}[{i}]")


def check_chars(text: str, limits: Limits, field: str) -> None:
    """At most ``max_chars`` characters, all of them Unicode (JSON's \\ud800 escapes are not)."""
    if len(text) > limits.max_chars:
        raise RequestError(field, f"{len(text)} characters; at most {limits.max_chars}",
                           status=413)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise RequestError(field, f"not valid Unicode (a lone surrogate at character "
                           f"{err.start + 1})") from None


def check_range(value: float | int | None, field: str, low: float | int,
                high: float | int | None = None) -> None:
    """``value`` (when given) within [low, high]."""
    if value is None:
        return
    if value < low or (high is not None and value > high) or value != value:
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise RequestError(field, f"must be {bound}, got {value}")
