"""The translation service: ``POST /v1/translate``.

Texts of requests with the same decoding options (beam size, n-best, length penalty,
attention) are translated in one :meth:`Translator.translate_n_best` call.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from ..errors import UserError
from ..models.translation import TranslationModel
from ..translator import Translation, Translator
from .batching import Job
from .schemas import Limits, RequestError, TranslateRequest, check_range, check_texts


class TranslationService:
    Request = TranslateRequest

    def __init__(self, name: str, translator: Translator, limits: Limits) -> None:
        self.name = name
        self.translator = translator
        self.limits = limits
        self._checked: dict[tuple[int | None, int | None, float | None],
                            tuple[int, int, float]] = {}

    def describe(self) -> dict[str, Any]:
        config = self.translator.config
        return {"source": config.data.src, "target": config.data.trg,
                "attention": (isinstance(self.translator.model, TranslationModel)
                              and self.translator.model.decoder.attention is not None),
                "defaults": {"beam_size": config.decoding.beam_size,
                             "n_best": config.decoding.n_best,
                             "length_penalty": config.decoding.length_penalty}}

    def prepare(self, body: TranslateRequest,
                on_token: Callable[[int, str], None] | None = None) -> Job:
        """Check ``body`` -> its job (raises RequestError naming the field at fault)."""
        check_texts(body.texts, self.limits)
        check_range(body.beam_size, "beam_size", 1, self.limits.max_beam_size)
        beam = body.beam_size or self.translator.config.decoding.beam_size
        check_range(body.n_best, "n_best", 1, beam)
        check_range(body.length_penalty, "length_penalty", 0.0, 10.0)
        if body.attention and not isinstance(self.translator.model, TranslationModel):
            raise RequestError("attention", "this model is served from an ONNX export, which "
                               "returns no attention; serve its run directory to get it")
        key = ("translate", *self._decoding(body.beam_size, body.n_best, body.length_penalty),
               body.attention)
        tokens = self.translator.src_tokenizer.encode_batch(body.texts)
        return Job(key, list(body.texts), sum(len(ids) + 1 for ids in tokens))

    def _decoding(self, beam_size: int | None, n_best: int | None,
                  length_penalty: float | None) -> tuple[int, int, float]:
        """The options a search runs with (the run's own where not given), checked. Kept:
        checking them as a config costs milliseconds, on the event loop."""
        given = (beam_size, n_best, length_penalty)
        if given not in self._checked:
            try:
                decoding = self.translator.decoding_config(
                    beam_size=beam_size, n_best=n_best, length_penalty=length_penalty)
            except UserError as err:
                raise RequestError("options", str(err)) from None
            if len(self._checked) >= 1024:
                self._checked.clear()
            self._checked[given] = (decoding.beam_size, decoding.n_best, decoding.length_penalty)
        return self._checked[given]

    def run(self, key: Hashable, texts: list[str]) -> list[tuple[list[Translation], Any]]:
        """One batched search (on the worker thread) -> per text (n-best, attention or None)."""
        assert isinstance(key, tuple)  # made by prepare()
        _, beam_size, n_best, length_penalty, attention = key
        found = self.translator.translate_n_best(texts, beam_size=beam_size, n_best=n_best,
                                                 length_penalty=length_penalty)
        maps = [self.translator.attention(text, hyps[0].text) if attention and text.strip()
                else None for text, hyps in zip(texts, found)]
        return list(zip(found, maps))

    def respond(self, body: TranslateRequest, outputs: list[tuple[list[Translation], Any]]
                ) -> dict[str, Any]:
        translations = []
        for hypotheses, attention in outputs:
            best = hypotheses[0]
            row = {"text": best.text, "score": best.score, "log_prob": best.log_prob,
                   "n_best": [{"text": h.text, "score": h.score, "log_prob": h.log_prob}
                              for h in hypotheses]}
            if body.attention:
                row["attention"] = None if attention is None else {
                    "source": attention[0], "target": attention[1],
                    "weights": [[round(float(w), 4) for w in row_] for row_ in attention[2]]}
            translations.append(row)
        return {"model": self.name, "translations": translations}
