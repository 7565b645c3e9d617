"""Exact match for QA answers after SQuAD-style normalisation.

Both sides are lowercased, stripped of punctuation and of the articles
"a", "an" and "the", and have their whitespace collapsed. The score is the
fraction of pairs (0..1) whose normalised strings are identical.
"""

import re
import string

import datasets
import evaluate

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize(text: str) -> str:
    lowered = text.lower()
    no_punct = "".join(ch for ch in lowered if ch not in _PUNCT)
    no_articles = _ARTICLES.sub(" ", no_punct)
    return " ".join(no_articles.split())


class ExactMatch(evaluate.Metric):
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
            return {"exact_match": 0.0}
        hits = sum(normalize(p) == normalize(r) for p, r in zip(predictions, references))
        return {"exact_match": hits / len(predictions)}
