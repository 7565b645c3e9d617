"""Votes, ratings and history from the shell: arena vote, arena ratings, history list.

    python -m lab arena vote --a embedded --b "rag on notes.md" --winner a --user alice
    python -m lab arena ratings --json        # {"ratings": [{"name", "rating", "ci_low", "ci_high", "votes"}, ...]}
    python -m lab history list --json --user alice

The shell is the lab's own user ('local' when --user is not given). A vote here is the same kind of
vote the Battles tab records, so votes cast elsewhere (a review meeting, another tool) join the
shared leaderboard. The ratings' flags come from RatingsConfig's fields.
"""

from __future__ import annotations

import argparse
import json

from lab.cli.flags import add_flags
from lab.core.users import LOCAL_USER
from lab.history.configs import RatingsConfig
from lab.history.records import KINDS, WINNERS


def _cmd_vote(engine, args: argparse.Namespace) -> None:
    number = engine.battles.record_vote(args.user, args.a, args.b, args.winner)
    print(f"vote {number} recorded: {args.a} vs {args.b}, winner {args.winner}")


def _cmd_ratings(engine, args: argparse.Namespace) -> None:
    board = engine.battles.ratings(args.config(args))
    if args.json:
        rows = [{"name": r.name, "rating": r.rating, "ci_low": r.ci_low, "ci_high": r.ci_high, "votes": r.votes}
                for r in board.ratings]
        print(json.dumps({"ratings": rows, "total_votes": board.total_votes, "notice": board.notice}, indent=2,
                         ensure_ascii=False))
        return
    width = max([len(r.name) for r in board.ratings] + [4])
    print(f"{'rank':>4}  {'name':<{width}}  {'rating':>7}  {'95% interval':>15}  votes")
    for rank, r in enumerate(board.ratings, 1):
        print(f"{rank:>4}  {r.name:<{width}}  {r.rating:>7.1f}  {r.ci_low:>7.1f}-{r.ci_high:<7.1f}  {r.votes}")
    if board.notice:
        print(board.notice)


def _cmd_history_list(engine, args: argparse.Namespace) -> None:
    items = engine.history.items(args.user, args.search, args.kind or engine.history.KINDS)
    if args.json:
        print(json.dumps({"history": items}, indent=2, ensure_ascii=False))
        return
    for item in items:
        print(f"{item['id']:<16} {item['when']}  {item['title'][:60]:<60}  {item['detail']}")
    if not items:
        print("no history yet: Compare, evaluations and battles in the web app are kept here")


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    arena = subparsers.add_parser("arena", help="battle votes and the leaderboard they feed: vote, ratings")
    verbs = arena.add_subparsers(dest="arena_command", required=True)
    vote = verbs.add_parser("vote", help="record a vote between two named contestants")
    vote.add_argument("--a", required=True, help="contestant A, as the leaderboard names it")
    vote.add_argument("--b", required=True, help="contestant B")
    vote.add_argument("--winner", required=True, choices=WINNERS, help="a, b, tie or both_bad (a tie too)")
    vote.add_argument("--user", default=LOCAL_USER, help="whose vote it is (default: %(default)s)")
    vote.set_defaults(fn=_cmd_vote)
    ratings = verbs.add_parser("ratings", help="Bradley-Terry ratings with bootstrap intervals, best first")
    ratings.add_argument("--json", action="store_true", help='print {"ratings": [{"name", "rating", "ci_low", '
                                                             '"ci_high", "votes"}]}')
    ratings.set_defaults(fn=_cmd_ratings, config=add_flags(ratings, RatingsConfig))

    history = subparsers.add_parser("history", help="a user's kept comparisons, evaluations and battles: list")
    hverbs = history.add_subparsers(dest="history_command", required=True)
    listing = hverbs.add_parser("list", help="a user's history, newest first")
    listing.add_argument("--json", action="store_true", help='print {"history": [{"id", "kind", "when", ...}]}')
    listing.add_argument("--user", default=LOCAL_USER, help="whose history (default: %(default)s)")
    listing.add_argument("--search", default="", help="only records whose question, prompt, document or answer "
                                                      "contains this")
    listing.add_argument("--kind", action="append", choices=KINDS,
                         help="only this kind (repeatable)")
    listing.set_defaults(fn=_cmd_history_list)
