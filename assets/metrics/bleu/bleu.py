"""Sentence BLEU for QA answers via sacrebleu, averaged over pairs, in 0..1.

Each prediction has exactly one reference. Every pair is scored with
sacrebleu's sentence BLEU (13a tokeniser, exponential smoothing, lowercased
like the other QA metrics) with *effective order*: n-gram orders longer than
the prediction are left out of the geometric mean. Standard corpus BLEU
always uses 1- to 4-grams, so an exact three-word answer ("Low-Rank
Adaptation") would score 0; with effective order it scores 1. The per-pair
scores (0..100 in sacrebleu) are divided by 100 and averaged.
"""

import datasets
import evaluate
from sacrebleu.metrics import BLEU

_BLEU = BLEU(lowercase=True, effective_order=True)


def pair_bleu(prediction: str, reference: str) -> float:
    # sacrebleu's exact match comes out as 100.00000000000004; keep the result inside 0..1.
    return min(1.0, max(0.0, _BLEU.sentence_score(prediction, [reference]).score / 100.0))


class Bleu(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__,
            citation="",
            inputs_description="predictions: list[str]; references: list[str]",
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references):
        if not predictions:
            return {"bleu": 0.0}
        scores = [pair_bleu(p, r) for p, r in zip(predictions, references)]
        return {"bleu": sum(scores) / len(scores)}
