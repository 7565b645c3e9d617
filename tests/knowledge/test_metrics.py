"""Tests for lab.knowledge.metrics and the local evaluate modules in assets/metrics.

Expected values are worked out by hand in the comments, not read back from
the code under test.
"""

import math
import socket

import pytest

from lab.knowledge import metrics


@pytest.fixture(scope="module")
def loaded():
    return metrics.load_metrics()


# --- exact match ---------------------------------------------------------

def test_exact_match_normalises_case_punctuation_and_articles():
    # "The Paris." -> "the paris" -> "paris"
    assert metrics.score_one("The Paris.", "paris")["exact_match"] == 1.0


def test_exact_match_mismatch_and_mean():
    assert metrics.score_one("London", "Paris")["exact_match"] == 0.0
    # 2 of 3 pairs match after normalisation
    scores = metrics.score_answers(
        ["An apple!", "  blue   sky ", "red"], ["apple", "Blue sky", "green"]
    )
    assert scores["exact_match"] == pytest.approx(2 / 3)


# --- token F1 ------------------------------------------------------------

def test_token_f1_partial_overlap():
    # pred tokens {cat, sat} (article dropped), ref {cat, sat, down}
    # P = 2/2, R = 2/3, F1 = 2*P*R/(P+R) = 0.8
    assert metrics.score_one("the cat sat", "cat sat down")["f1"] == pytest.approx(0.8)


def test_token_f1_clips_repeated_tokens():
    # pred [go, go, go], ref [go]: overlap = min(3, 1) = 1
    # P = 1/3, R = 1, F1 = 2*(1/3)/(4/3) = 0.5
    assert metrics.score_one("go go go", "Go")["f1"] == pytest.approx(0.5)


def test_token_f1_counts_repeats_as_a_multiset():
    # pred {new: 2, york: 1}, ref {new: 2, york: 2}: overlap = 2 + 1 = 3
    # P = 3/3, R = 3/4, F1 = 2*(3/4)/(7/4) = 6/7  (a set overlap would give 4/7)
    score = metrics.score_one("new new york", "New York new York")["f1"]
    assert score == pytest.approx(6 / 7)


def test_token_f1_no_overlap_and_mean():
    assert metrics.score_one("blue", "red")["f1"] == 0.0
    # mean of 0.8 and 1.0
    scores = metrics.score_answers(["the cat sat", "Paris"], ["cat sat down", "paris."])
    assert scores["f1"] == pytest.approx(0.9)


# --- ROUGE-L -------------------------------------------------------------

def test_rouge_l_from_lcs():
    # pred "the cat sat on the mat" (6), ref "the cat is on the mat" (6)
    # LCS = "the cat on the mat" = 5 -> P = R = F = 5/6
    score = metrics.score_one("the cat sat on the mat", "the cat is on the mat")["rouge_l"]
    assert score == pytest.approx(5 / 6)


def test_rouge_l_unequal_lengths_and_mean():
    # pred "cat sat mat" (3), ref 6 tokens; LCS = 3 -> P = 1, R = 1/2, F = 2/3
    first = metrics.score_one("cat sat mat", "the cat sat on the mat")["rouge_l"]
    assert first == pytest.approx(2 / 3)
    both = metrics.score_answers(
        ["cat sat mat", "the cat sat on the mat"],
        ["the cat sat on the mat", "the cat is on the mat"],
    )
    assert both["rouge_l"] == pytest.approx((2 / 3 + 5 / 6) / 2)


def test_rouge_l_uses_stemming():
    # Porter stemming: cats -> cat, running -> run, so LCS covers everything
    assert metrics.score_one("cats running", "cat run")["rouge_l"] == pytest.approx(1.0)


# --- BLEU ----------------------------------------------------------------

def test_bleu_identical_is_one():
    s = "the quick brown fox jumps over the lazy dog"
    assert metrics.score_one(s, s)["bleu"] == pytest.approx(1.0)


@pytest.mark.parametrize("answer", ["30", "8,192", "Low-Rank Adaptation"])
def test_bleu_short_exact_answers_score_one(answer):
    # Under 4 tokens corpus BLEU has no 4-gram and scores 0; with effective order only the
    # orders the answer has count, and every one of them matches exactly.
    assert metrics.score_one(answer, answer)["bleu"] == pytest.approx(1.0)


def test_bleu_ignores_case():
    assert metrics.score_one("Matrix B", "matrix b")["bleu"] == pytest.approx(1.0)


def test_bleu_disjoint_is_zero():
    assert metrics.score_one("one two three four", "five six seven eight")["bleu"] == 0.0


def test_bleu_partial_by_hand():
    # pred "the cat sat on the mat", ref "the cat sat on a mat"
    # clipped n-gram precisions: 1g 5/6, 2g 3/5, 3g 2/4, 4g 1/3; equal lengths -> BP = 1
    # BLEU = (5/6 * 3/5 * 2/4 * 1/3) ** (1/4) = (1/12) ** 0.25
    score = metrics.score_one("the cat sat on the mat", "the cat sat on a mat")["bleu"]
    assert score == pytest.approx((1 / 12) ** 0.25, abs=1e-6)


def test_bleu_two_word_answer_by_hand():
    # pred "matrix b zero" (3 tokens), ref "matrix b" (2): effective order 3 (the pred has 3-grams)
    # precisions 1g 2/3, 2g 1/2, 3g: 0/1 matches -> smoothed. sacrebleu's 'exp' smoothing gives a
    # zero-count order 1 / (2 ** k * count) with k = 1 for the first such order: 3g = 1/2.
    # geometric mean = (2/3 * 1/2 * 1/2) ** (1/3) = (1/6) ** (1/3); BP = 1 (pred longer than ref)
    score = metrics.score_one("matrix b zero", "matrix b")["bleu"]
    assert score == pytest.approx((1 / 6) ** (1 / 3), abs=1e-6)


def test_bleu_brevity_penalty():
    # pred is a 4-token prefix of a 6-token ref: all precisions 1, BP = exp(1 - 6/4)
    score = metrics.score_one("the cat sat on", "the cat sat on the mat")["bleu"]
    assert score == pytest.approx(math.exp(1 - 6 / 4), abs=1e-6)


def test_bleu_is_the_mean_over_pairs():
    # 1.0 for the exact short answer, 0.0 for the disjoint one
    scores = metrics.score_answers(["30", "red"], ["30", "blue"])
    assert scores["bleu"] == pytest.approx(0.5)


# --- API -----------------------------------------------------------------

def test_score_answers_keys_and_range():
    scores = metrics.score_answers(["The Paris.", "the cat sat"], ["paris", "cat sat down"])
    assert set(scores) == {"exact_match", "f1", "rouge_l", "bleu"}
    for value in scores.values():
        assert isinstance(value, float)
        assert 0.0 <= value <= 1.0


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError, match="length"):
        metrics.score_answers(["a", "b"], ["a"])


def test_empty_input_raises():
    with pytest.raises(ValueError, match="empty"):
        metrics.score_answers([], [])


def test_load_metrics_is_cached(loaded):
    again = metrics.load_metrics()
    assert set(again) == {"exact_match", "f1", "rouge_l", "bleu"}
    for key in again:
        assert again[key] is loaded[key]


def test_loads_offline_without_network(monkeypatch):
    """Fresh load with offline flags set and every socket connection refused."""
    import evaluate

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")
    # evaluate reads HF_EVALUATE_OFFLINE once at import, so patch the parsed flag too.
    monkeypatch.setattr(evaluate.config, "HF_EVALUATE_OFFLINE", True)

    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network disabled in test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(metrics, "_cache", None)  # force a real reload

    modules = metrics.load_metrics()
    assert set(modules) == {"exact_match", "f1", "rouge_l", "bleu"}
    assert metrics.score_one("The Paris.", "paris")["exact_match"] == 1.0
    assert attempts == []
