"""Corpus BLEU for QA answers via sacrebleu, scaled to 0..1.

Each prediction has exactly one reference. sacrebleu's default settings
(13a tokeniser, exponential smoothing) are used and its 0..100 score is
divided by 100.
"""

import datasets
import evaluate
import sacrebleu


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
        result = sacrebleu.corpus_bleu(list(predictions), [list(references)])
        return {"bleu": result.score / 100.0}
