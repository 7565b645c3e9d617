"""Bradley–Terry ratings from votes: a known ordering comes back, with intervals that separate it.

    .venv/bin/python -m pytest -q tests/history/test_ratings.py
"""

from __future__ import annotations

import math

import pytest

from lab.history.ratings import RatingsConfig, leaderboard


def chain_votes(per_pair: int = 40) -> list[tuple[str, str, str]]:
    """A beats B and B beats C, 3 times out of 4; sides alternate so position says nothing."""
    votes = []
    for better, worse in (("A", "B"), ("B", "C")):
        for n in range(per_pair):
            won = n % 4 != 3
            if n % 2:
                votes.append((better, worse, "a" if won else "b"))
            else:
                votes.append((worse, better, "b" if won else "a"))
    return votes


def test_a_chain_of_three_to_one_wins_orders_the_board_and_the_intervals_separate_the_ends():
    board = leaderboard(chain_votes())
    by_name = {r.name: r for r in board.ratings}
    assert [r.name for r in board.ratings] == ["A", "B", "C"]
    assert by_name["A"].ci_low > by_name["C"].ci_high
    for r in board.ratings:
        assert r.ci_low <= r.rating <= r.ci_high
    assert {r.name: r.votes for r in board.ratings} == {"A": 40, "B": 80, "C": 40}
    assert board.total_votes == 80


def test_three_to_one_odds_are_about_191_points_apart_as_on_the_elo_scale():
    """P(win) = 1 / (1 + 10^(-d/400)) = 3/4 gives d = 400 log10(3); the faint prior may shave a point or two."""
    by_name = {r.name: r.rating for r in leaderboard(chain_votes(400), RatingsConfig(rounds=0)).ratings}
    expected = 400 * math.log10(3)
    assert by_name["A"] - by_name["B"] == pytest.approx(expected, abs=3)
    assert by_name["B"] - by_name["C"] == pytest.approx(expected, abs=3)
    assert sum(by_name.values()) / 3 == pytest.approx(1000, abs=0.5)


def test_ties_and_both_bad_count_half_each_way():
    votes = [("X", "Y", "tie"), ("X", "Y", "both_bad"), ("Y", "X", "tie"), ("Y", "X", "both_bad")]
    ratings = {r.name: r for r in leaderboard(votes, RatingsConfig(rounds=0)).ratings}
    assert ratings["X"].rating == pytest.approx(ratings["Y"].rating)
    assert ratings["X"].wins == ratings["Y"].wins == 2.0


def test_the_same_votes_give_the_same_table_and_an_unbeaten_contestant_stays_finite():
    votes = [("P", "Q", "a")] * 5
    first, again = leaderboard(votes), leaderboard(votes)
    assert first.as_dict() == again.as_dict()
    assert all(math.isfinite(x) for r in first.ratings for x in (r.rating, r.ci_low, r.ci_high))
    assert first.ratings[0].name == "P"


def test_a_contestant_below_the_minimum_votes_is_named_in_the_notice():
    votes = chain_votes(12) + [("A", "D", "a")]
    board = leaderboard(votes, RatingsConfig(min_votes=10, rounds=20))
    assert board.below_minimum == ["D"] and "D" in board.notice
    assert leaderboard(chain_votes(12), RatingsConfig(min_votes=10, rounds=20)).notice == ""
    assert leaderboard([]).ratings == [] and "No votes" in leaderboard([]).notice


@pytest.mark.parametrize("bad", [{"rounds": -1}, {"confidence": 1.0}, {"min_votes": -2}, {"prior_c": 0}])
def test_bad_settings_are_refused_naming_the_field(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        RatingsConfig(**bad)
