"""How the Arena's leaderboard is fitted, apart from the fit itself (lab.history.ratings).

    python -m lab arena ratings --help      # every RatingsConfig field as a flag

No numpy or scikit-learn here, so the command line builds its flags without them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RatingsConfig:
    base: float = 1000.0
    """The average rating; every rating is relative to the others, so this only sets where the scale sits."""
    rounds: int = 200
    """Bootstrap resamples behind the confidence intervals (more: steadier interval ends, slower)."""
    confidence: float = 0.95
    """Width of the interval: 0.95 keeps the middle 95% of the bootstrap ratings."""
    seed: int = 0
    """Seed of the bootstrap resampling, so the same votes always give the same table."""
    min_votes: int = 10
    """Contestants with fewer votes than this are flagged: their rating and interval say little yet."""
    prior_c: float = 100.0
    """Inverse strength of a faint Gaussian prior on the strengths (LogisticRegression's C). Pure maximum
    likelihood puts a contestant that never lost at +infinity; with C=100 a rating fit from a few dozen votes
    moves by well under a point, and an unbeaten one stays finite."""

    def __post_init__(self) -> None:
        if isinstance(self.rounds, bool) or not isinstance(self.rounds, int) or self.rounds < 0:
            raise ValueError(f"rounds must be a whole number >= 0, got {self.rounds!r}")
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence must be between 0 and 1, got {self.confidence!r}")
        if isinstance(self.min_votes, bool) or not isinstance(self.min_votes, int) or self.min_votes < 0:
            raise ValueError(f"min_votes must be a whole number >= 0, got {self.min_votes!r}")
        if not self.prior_c > 0:
            raise ValueError(f"prior_c must be > 0, got {self.prior_c!r}")
