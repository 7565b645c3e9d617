"""ROUGE-L F-measure (longest common subsequence) for QA answers.

Each pair is scored with rouge_score's RougeScorer (Porter stemming on) and
the per-pair F-measures are averaged, giving a value in 0..1.
"""

import datasets
import evaluate
from rouge_score import rouge_scorer


class RougeL(evaluate.Metric):
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
            return {"rouge_l": 0.0}
        scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
        # RougeScorer.score takes (target, prediction).
        values = [scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(predictions, references)]
        return {"rouge_l": sum(values) / len(values)}
