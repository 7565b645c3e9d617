"""QA answer scoring with the lab's own local `evaluate` metric modules.

The four modules live under ``assets/metrics/<name>/<name>.py`` and are
loaded by path, so no metric script is fetched from the Hugging Face Hub.
"""

from __future__ import annotations

import re
import string
import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # loaded inside load_metrics: retrieval's answer check needs only `normalise`
    import evaluate

METRICS_DIR = Path(__file__).resolve().parents[2] / "assets" / "metrics"

# result key -> module folder name under METRICS_DIR
_MODULES: dict[str, str] = {
    "exact_match": "exact_match",
    "f1": "token_f1",
    "rouge_l": "rouge_l",
    "bleu": "bleu",
}

_cache: dict[str, evaluate.EvaluationModule] | None = None
_lock = threading.Lock()

_PUNCTUATION = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalise(text: str) -> str:
    """Text as the F1 metric (assets/metrics/token_f1) compares it: lower case, no punctuation, no articles, single
    spaces. Retrieval's recall@k uses it, so "the reference is in a chunk" means what F1 would credit."""
    lowered = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", lowered).split())


def load_metrics() -> dict[str, evaluate.EvaluationModule]:
    """Load the four metric modules from local paths, once per process.

    Returns a dict keyed by result name (``exact_match``, ``f1``, ``rouge_l``,
    ``bleu``).
    """
    global _cache
    import evaluate

    with _lock:
        if _cache is None:
            loaded: dict[str, evaluate.EvaluationModule] = {}
            for key, folder in _MODULES.items():
                script = METRICS_DIR / folder / f"{folder}.py"
                if not script.is_file():
                    raise FileNotFoundError(f"metric module not found: {script}")
                loaded[key] = evaluate.load(str(script.parent))
            _cache = loaded
        return dict(_cache)


def check(predictions: list[str], references: list[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(
            f"predictions and references differ in length: "
            f"{len(predictions)} != {len(references)}"
        )
    if not predictions:
        raise ValueError("predictions and references are empty; nothing to score")


def score_answers(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Score predicted answers against one reference each.

    Returns ``exact_match``, ``f1``, ``rouge_l`` and ``bleu`` (sentence BLEU
    with effective order), each the mean over pairs, in 0..1.
    """
    predictions, references = list(predictions), list(references)
    check(predictions, references)
    scores: dict[str, float] = {}
    for key, module in load_metrics().items():
        result = module.compute(predictions=predictions, references=references)
        scores[key] = float(result[key])
    return scores


def score_one(prediction: str, reference: str) -> dict[str, float]:
    """Score a single prediction/reference pair (same keys as ``score_answers``)."""
    return score_answers([prediction], [reference])
