"""SQuAD bag-of-tokens F1 for QA answers.

Text is normalised as in SQuAD (lowercase, no punctuation, no articles,
single spaces) and split on whitespace. Per pair, precision and recall are
computed from the multiset overlap of tokens; the score is the mean F1 over
pairs, in 0..1. Two empty answers count as a perfect match.
"""

import re
import string
from collections import Counter

import datasets
import evaluate

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def tokens(text: str) -> list:
    lowered = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return _ARTICLES.sub(" ", lowered).split()


def pair_f1(prediction: str, reference: str) -> float:
    pred, ref = tokens(prediction), tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    overlap = sum((Counter(pred) & Counter(ref)).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(pred), overlap / len(ref)
    return 2 * precision * recall / (precision + recall)


class TokenF1(evaluate.Metric):
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
            return {"f1": 0.0}
        scores = [pair_f1(p, r) for p, r in zip(predictions, references)]
        return {"f1": sum(scores) / len(scores)}
