"""Corpus-level translation metrics through sacrebleu (BLEU, chrF, TER), with signatures."""

from __future__ import annotations

from dataclasses import dataclass

from sacrebleu.metrics import BLEU, CHRF, TER


@dataclass
class Score:
    name: str  # "bleu" | "chrf" | "ter"
    value: float
    signature: str
    text: str  # sacrebleu's own one-line rendering, e.g. "BLEU = 23.41 55.1/29.0/..."


def score_translations(hypotheses: list[str], references: list[str],
                       metrics: tuple[str, ...] = ("bleu", "chrf", "ter"),
                       tokenize: str = "13a", lowercase: bool = False) -> dict[str, Score]:
    """Score detokenized hypotheses against one reference each."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    scorers = {
        "bleu": lambda: BLEU(tokenize=tokenize, lowercase=lowercase),
        "chrf": lambda: CHRF(),
        "ter": lambda: TER(case_sensitive=not lowercase),
    }
    scores = {}
    for name in metrics:
        metric = scorers[name]()
        result = metric.corpus_score(hypotheses, [references])
        scores[name] = Score(name, float(result.score), str(metric.get_signature()), str(result))
    return scores
