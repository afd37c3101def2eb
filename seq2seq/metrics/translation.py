"""Corpus-level translation metrics through sacrebleu (BLEU, chrF, TER), with signatures."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sacrebleu.metrics.bleu import BLEU
from sacrebleu.metrics.chrf import CHRF
from sacrebleu.metrics.ter import TER


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
    scorers: dict[str, Callable[[], Any]] = {
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


def sentence_chrf(hypotheses: list[str], references: list[str]) -> list[float]:
    """chrF of each hypothesis against its reference (for finding best and worst cases)."""
    metric = CHRF()
    return [metric.sentence_score(h, [r]).score for h, r in zip(hypotheses, references)]


def paired_bootstrap(baseline: list[str], system: list[str], references: list[str],
                     tokenize: str = "13a", lowercase: bool = False,
                     samples: int = 1000) -> dict[str, dict[str, float]]:
    """sacrebleu's paired bootstrap resampling: is ``system`` better than ``baseline``?

    Returns per metric (BLEU, chrF): both scores, the system's bootstrap mean and 95% CI,
    and the p-value of the difference (seeded by sacrebleu, so repeatable).
    """
    from sacrebleu.significance import PairedTest

    metrics = {"bleu": BLEU(tokenize=tokenize, lowercase=lowercase), "chrf": CHRF()}
    test = PairedTest([("baseline", baseline), ("system", system)], metrics, [references],
                      test_type="bs", n_samples=samples)
    _, scores = test()  # keyed by sacrebleu's display names (BLEU, chrF2), in our order
    results = {}
    named: list[tuple[str, Any]] = [(k, v) for k, v in scores.items() if k != "System"]
    for name, (_, (base, other)) in zip(metrics, named):
        results[name] = {"baseline": round(float(base.score), 4), "system": round(float(other.score), 4),
                         "system_mean": round(float(other.mean), 4), "system_ci95": round(float(other.ci), 4),
                         "p_value": round(float(other.p_value), 4)}
    return results
