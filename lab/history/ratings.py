"""Ratings from votes: a Bradley–Terry fit with bootstrap confidence intervals, on an Elo-like scale.

    python -m lab arena ratings --json

Bradley–Terry says contestant i beats j with probability sigmoid(w_i - w_j). The strengths w that
make the votes most likely are a logistic regression without intercept: one row per pair of
contestants, +1 in i's column and -1 in j's, the outcome "i won", weighted by how often that
happened. This is how FastChat's Chatbot Arena computes its leaderboard, and scikit-learn's
LogisticRegression fits it. A tie (and "both bad", which FastChat also counts as a tie) is half a
win each way. Strengths become ratings as Elo does: rating = base + 400/ln(10) * w, so 400 points
apart means 10:1 odds; the ratings are centred on `base`.

How sure the ordering is comes from the bootstrap: the votes are resampled with replacement
`rounds` times (fixed seed, so the same votes give the same table), refitted, and the 2.5th and
97.5th percentiles of each contestant's rating are its interval. Few votes mean wide intervals;
below `min_votes` a contestant's row carries a notice.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from sklearn.linear_model import LogisticRegression

from lab.history.configs import RatingsConfig

ELO_SCALE = 400 / math.log(10)
"""Rating points per unit of Bradley–Terry strength: 400 points = odds of 10 to 1, as in Elo."""


@dataclass
class Rating:
    name: str
    rating: float
    ci_low: float
    ci_high: float
    votes: int
    """Votes this contestant took part in (as A or as B)."""
    wins: float = 0.0
    """Votes won, a tie counting half."""


@dataclass
class Leaderboard:
    ratings: list[Rating] = field(default_factory=list)
    """Best first."""
    total_votes: int = 0
    notice: str = ""
    """Non-empty when some contestant has fewer than min_votes votes (or there are no votes at all)."""
    below_minimum: list[str] = field(default_factory=list)
    """The contestants with fewer than min_votes votes."""

    def as_dict(self) -> dict:
        return {"ratings": [asdict(r) for r in self.ratings], "total_votes": self.total_votes, "notice": self.notice,
                "below_minimum": self.below_minimum}


Vote = tuple[str, str, str]
"""(a, b, winner) with winner 'a', 'b', 'tie' or 'both_bad'."""

_A_SCORE = {"a": 1.0, "b": 0.0, "tie": 0.5, "both_bad": 0.5}


def _encode(votes: Sequence[Vote]) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Contestant names, and per vote the index of A [V], of B [V] and A's score (1, 0 or 0.5) [V]."""
    names = sorted({name for a, b, _ in votes for name in (a, b)})
    index = {name: i for i, name in enumerate(names)}
    a = np.array([index[v[0]] for v in votes], dtype=np.int64)
    b = np.array([index[v[1]] for v in votes], dtype=np.int64)
    score = np.array([_A_SCORE[v[2]] for v in votes], dtype=np.float64)
    return names, a, b, score


def fit_strengths(n: int, a: np.ndarray, b: np.ndarray, score: np.ndarray, prior_c: float) -> np.ndarray:
    """Bradley–Terry strengths [n] (mean 0) from votes given as index arrays, by weighted logistic regression.

    Votes are summed per ordered pair first: wins[i, j] is how often i beat j (ties half), so the
    regression has at most n*(n-1) rows however many votes there are. Each pair appears in both
    orientations (x and -x, outcomes swapped): the fit is then symmetric and always sees both classes.
    """
    wins = np.zeros((n, n))
    np.add.at(wins, (a, b), score)
    np.add.at(wins, (b, a), 1.0 - score)
    i, j = np.nonzero(wins + wins.T)  # every ordered pair that met at least once
    rows = len(i)
    x = np.zeros((rows, n))
    x[np.arange(rows), i] = 1.0
    x[np.arange(rows), j] = -1.0
    # Row r says "i_r beat j_r" (y=1) with weight wins[i, j] and "j_r beat i_r" (y=0) with weight wins[j, i].
    features = np.vstack([x, x])
    outcome = np.concatenate([np.ones(rows), np.zeros(rows)])
    weight = np.concatenate([wins[i, j], wins[j, i]])
    # newton-cg: exact second derivatives suit these few columns, and it is ~10x quicker here than lbfgs.
    model = LogisticRegression(fit_intercept=False, C=prior_c, solver="newton-cg", tol=1e-8, max_iter=1000)
    model.fit(features, outcome, sample_weight=weight)
    strengths = model.coef_[0]
    return strengths - strengths.mean()


def leaderboard(votes: Sequence[Vote], cfg: RatingsConfig | None = None) -> Leaderboard:
    """Ratings, bootstrap intervals and vote counts of every contestant that has a vote, best first."""
    cfg = cfg or RatingsConfig()
    if not votes:
        return Leaderboard(notice="No votes yet: battle, vote, and the leaderboard fills in.")
    names, a, b, score = _encode(votes)
    n = len(names)
    point = cfg.base + ELO_SCALE * fit_strengths(n, a, b, score, cfg.prior_c)
    rng = np.random.default_rng(cfg.seed)
    samples = np.full((cfg.rounds, n), np.nan)  # [rounds, n]; NaN where a contestant drew no vote
    for r in range(cfg.rounds):
        pick = rng.integers(0, len(votes), len(votes))
        present = np.unique(np.concatenate([a[pick], b[pick]]))
        # Refit over the contestants this resample holds, so an absent one does not pull the mean.
        remap = np.full(n, -1)
        remap[present] = np.arange(len(present))
        strengths = fit_strengths(len(present), remap[a[pick]], remap[b[pick]], score[pick], cfg.prior_c)
        samples[r, present] = cfg.base + ELO_SCALE * strengths
    tail = (1 - cfg.confidence) / 2 * 100
    counts = np.bincount(a, minlength=n) + np.bincount(b, minlength=n)
    won = np.bincount(a, weights=score, minlength=n) + np.bincount(b, weights=1 - score, minlength=n)
    rows = []
    for k, name in enumerate(names):
        column = samples[:, k][~np.isnan(samples[:, k])]
        low, high = (np.percentile(column, [tail, 100 - tail]) if len(column) else (point[k], point[k]))
        rows.append(Rating(name, round(float(point[k]), 1), round(float(low), 1), round(float(high), 1),
                           int(counts[k]), float(won[k])))
    rows.sort(key=lambda r: r.rating, reverse=True)
    few = [r.name for r in rows if r.votes < cfg.min_votes]
    notice = (f"Fewer than {cfg.min_votes} votes for {', '.join(few)}: their ratings and intervals are still "
              "rough; more battles will narrow them." if few else "")
    return Leaderboard(rows, len(votes), notice, few)
