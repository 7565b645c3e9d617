"""The one question prompt every Compare method uses, and how a short answer is read back.

    python -m lab ask --question "What does CAG stand for?" --methods base,rag,cag,full

Every method sends the same chat: an optional knowledge block (the whole document for CAG and
full context, the retrieved chunks for RAG, nothing for base and fine-tuned adapters), then an
instruction to answer in a few words, then the question. The rendered chat is split just before
the question into a *prefix* (knowledge + instruction) and a *suffix* (question + the template's
end-of-turn and assistant header). The two halves are tokenized separately and concatenated, so
CAG (prefix prefilled once, suffix per question) and full context (prefix + suffix prefilled
together) feed the model exactly the same token ids and greedy decoding gives the same answer.

The knowledge is read through lab.knowledge.documents.readable (markdown markup, tables and broken
Unicode turned into plain text) whoever passes it, so every method and every caller sees the same text.
Optional few-shot demonstrations (question -> short answer pairs from the bundled dev set, never from a
test or held-out set) follow the knowledge as earlier chat turns: they sit in the prefix, so CAG pays
for them once and full context on every question.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from lab.core.files import read_jsonl
from lab.knowledge.documents import readable

if TYPE_CHECKING:  # the prompt's text and few-shot examples need no torch (lab.knowledge.configs reads them)
    import torch
    from transformers import PreTrainedTokenizerBase

PROMPT_VERSION = 3
"""Bump whenever the wording below or the knowledge's reading changes: saved CAG caches are keyed on it.
2: the knowledge is passed through `readable`; few-shot turns may follow it.
3: RAG's chunks come without their heading paths (lab.knowledge.rag.HEADINGS_SHOWN)."""

SYSTEM = "You are a concise assistant. Reply with the short answer only: a few words, no full sentence."
WITH_KNOWLEDGE = "Document:\n{knowledge}\n\nAnswer the question using the document above. Reply with a few words only.\n"
WITHOUT_KNOWLEDGE = "Answer the question. Reply with a few words only.\n"
QUESTION = "Question: {question}"

_SLOT = "\u241fQUESTION\u241f"  # a marker no template rewrites, replaced by the question after rendering


@dataclass(frozen=True)
class PromptParts:
    """A question prompt cut where the question begins."""

    prefix_ids: torch.Tensor
    """[1, P] system turn, knowledge and instruction: what CAG prefills once."""
    suffix_ids: torch.Tensor
    """[1, S] the question and the template's tail up to the assistant header: per question."""

    @property
    def ids(self) -> torch.Tensor:
        """[1, P + S] the whole prompt, as the full-context and base methods prefill it."""
        import torch

        return torch.cat([self.prefix_ids, self.suffix_ids], dim=1)


Shots = tuple[tuple[str, str], ...]
"""Few-shot demonstrations: (question, short answer) pairs shown before the real question."""

DEV_QA = Path(__file__).resolve().parents[2] / "assets" / "knowledge" / "qa_dev.jsonl"
"""The tuning half of the bundled QA set; demonstrations come from here and nowhere else."""

MAX_SHOTS = 8


@lru_cache(maxsize=1)
def _dev_pairs() -> Shots:
    rows = read_jsonl(DEV_QA)
    return tuple((r["question"].strip(), r["answer"].strip()) for r in rows)


_NUMBER = re.compile(r"^[\d.,\s%-]+$")


def demonstrations(n: int) -> Shots:
    """`n` pairs from the end of the dev set, in file order, with at most one numeric answer.

    From the end because `eval --limit` scores the first questions, so an example is never also a scored
    question. One number at most because a small model copies the examples' answers: with the last three
    (1.0, 0.2, 0.95) SmolLM2-135M often answered "1.0". It still does with one, and few-shot lowered F1 on
    dev and held-out alike (docs/BENCHMARKS.md), which is why it is off by default."""
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_SHOTS:
        raise ValueError(f"few_shot must be a whole number from 0 to {MAX_SHOTS}, got {n!r}")
    chosen: list[tuple[str, str]] = []
    for question, answer in reversed(_dev_pairs()):
        if len(chosen) == n:
            break
        if _NUMBER.match(answer) and any(_NUMBER.match(a) for _, a in chosen):
            continue
        chosen.append((question, answer))
    return tuple(reversed(chosen))


def _messages(knowledge: str | None, shots: Shots = ()) -> list[dict]:
    text = readable(knowledge) if knowledge else ""
    head = WITH_KNOWLEDGE.format(knowledge=text) if text else WITHOUT_KNOWLEDGE
    messages = [{"role": "system", "content": SYSTEM}]
    # Each demonstration is a finished turn: the model sees its own earlier replies being a few words long.
    for question, answer in shots:
        messages += [{"role": "user", "content": head + QUESTION.format(question=question)},
                     {"role": "assistant", "content": answer}]
        head = ""
    return messages + [{"role": "user", "content": head + QUESTION.format(question=_SLOT)}]


def prompt_texts(tokenizer: PreTrainedTokenizerBase, question: str, knowledge: str | None = None,
                 shots: Shots = ()) -> tuple[str, str]:
    """The rendered prompt as (prefix, suffix) text; prefix + suffix is the whole chat."""
    question = question.strip()
    if not question:
        raise ValueError("The question is empty; type a question first.")
    messages = _messages(knowledge, shots)
    if tokenizer.chat_template:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    else:
        text = "\n\n".join(m["content"] for m in messages) + "\nAnswer:"
    if text.count(_SLOT) != 1:
        raise ValueError("The model's chat template drops or repeats the user message; CAG cannot split its prompt.")
    prefix, tail = text.split(_SLOT)
    # "Question: " ends in a space that BPE tokenizers glue to the next word ("ĠWhat"); moving it
    # into the suffix keeps the question tokenized as it would be inside one string.
    stripped = prefix.rstrip(" ")
    return stripped, prefix[len(stripped):] + question + tail


def _ids(tokenizer: PreTrainedTokenizerBase, text: str) -> torch.Tensor:
    # The chat template already wrote every special token; add_special_tokens would add a BOS twice.
    return tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids


def split_prompt(tokenizer: PreTrainedTokenizerBase, question: str, knowledge: str | None = None,
                 shots: Shots = ()) -> PromptParts:
    """Token ids of the question prompt, cut into the cacheable prefix and the per-question suffix."""
    prefix, suffix = prompt_texts(tokenizer, question, knowledge, shots)
    return PromptParts(_ids(tokenizer, prefix), _ids(tokenizer, suffix))


def suffix_ids(tokenizer: PreTrainedTokenizerBase, question: str, knowledge: str | None = None,
               shots: Shots = ()) -> torch.Tensor:
    """[1, S] only the per-question half (CAG: the prefix is already in the cache)."""
    return _ids(tokenizer, prompt_texts(tokenizer, question, knowledge, shots)[1])


# ---- reading the answer back --------------------------------------------------------------------

_LEAD_IN = re.compile(r"^(?:(?:the\s+)?(?:short\s+)?answer(?:\s+to\s+(?:the|this)\s+question)?\s*(?:is)?\s*[:\-]?|a:)\s*",
                      re.IGNORECASE)
_ECHO = re.compile(r"^\s*question\s*:", re.IGNORECASE)
_COPULA = re.compile(r"\b(?:is|are|was|were|stands for|equals|means)\b:?\s+")
_HEDGE = re.compile(r"^(?:typically|usually|often|commonly|generally|normally|called)\s+", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s")  # "8,192" and "0.01" have no space after the dot


_MARKUP = re.compile(r"^(?:#{1,6}\s*|>\s*|[-*+]\s+|\|\s*)+")  # heading, quote, bullet or table marks copied from a document
_EMPHASIS = re.compile(r"\*\*|__|`")


def _clean(line: str) -> str:
    if _ECHO.match(line):  # the model repeating the question line is not an answer; read on
        return ""
    line = _EMPHASIS.sub("", _MARKUP.sub("", line.strip()))
    # Lead-ins can come repeated ("The answer is: The answer is: ..."); strip until none is left.
    while (stripped := _LEAD_IN.sub("", line, count=1)) != line:
        line = stripped
    line = _SENTENCE_END.split(line, maxsplit=1)[0].strip()
    if line.endswith("?"):  # a question echoed without its "Question:" label is not the answer either
        return ""
    # A small model often echoes the question ("A typical weight decay is 0.01"): keep what follows
    # the first linking verb, which is where the answer sits in such a sentence.
    match = _COPULA.search(line)
    if match and match.end() < len(line):
        line = _HEDGE.sub("", line[match.end():])
    # Quotes before the full stop: '"The Red Cross."' ends in a stop inside its quotes.
    return line.strip().strip("\"'`*").strip().rstrip(".").strip().strip("\"'`*").strip()


_HEADING_LINE = re.compile(r"^\s{0,3}(#{1,6})\s+(.+?)\s*#*\s*$", re.MULTILINE)
_PATH_SEPARATOR = re.compile(r"\s+>\s+")
"""How a chunk's heading path joins its headings ("LoRA > Rank r"), and what a copied path looks like."""


def _plain(text: str) -> str:
    """Lower-case words only, single spaces: how headings and answers are compared."""
    return " ".join(re.findall(r"\w+", readable(text).lower()))


Reject = Callable[[str], bool]
"""reject(answer) -> True when a read answer is not an answer at all (a heading copied from the document)."""


class HeadingGuard:
    """Knows a document's headings, so a heading path, the title or a heading that is only a heading is never
    read as an answer.

    The 135M model copies what stands out above a passage: given "LoRA > 1" over a chunk it answered "LoRA > 1".
    A heading is a fair answer when the body says it too ("LoftQ" heads the section that explains it); one
    that appears nowhere but in headings ("📌 Summary", "2. Fares") never is, and neither is the title."""

    def __init__(self, document: str) -> None:
        found = _HEADING_LINE.findall(document)  # [(marks, heading)]
        self.headings = {_plain(text) for _, text in found} - {""}
        self.title = next((_plain(text) for marks, text in found if marks == "#"), "")
        self.body = f" {_plain(_HEADING_LINE.sub(' ', document))} "

    def __call__(self, answer: str) -> bool:
        parts = [_plain(part) for part in _PATH_SEPARATOR.split(answer.strip())]
        if len(parts) > 1:
            # A copied path, maybe cut short ("RAG > RAG vs"): its first part is a heading. "x > 0" in a formula
            # is not, so it stays an answer.
            return parts[0] in self.headings
        plain = parts[0]
        if not plain:
            return False
        return plain == self.title or (plain in self.headings and f" {plain} " not in self.body)


_GUARDS: dict[int, HeadingGuard] = {}


def heading_guard(document: str) -> HeadingGuard:
    """The document's HeadingGuard, kept for the last few documents (built once per document, not per token)."""
    key = hash(document)  # str hashes are cached by Python: cheap on every call after the first
    guard = _GUARDS.get(key)
    if guard is None:
        if len(_GUARDS) >= 8:
            _GUARDS.pop(next(iter(_GUARDS)))
        guard = _GUARDS[key] = HeadingGuard(document)
    return guard


def read_answer(text: str, reject: Reject | None = None) -> tuple[str, bool]:
    """(short answer, complete) from generated text; the same rule for every method.

    The answer is the first sentence of the first line that still says something once lead-ins
    such as "The answer is:" are removed and that `reject` (a document's HeadingGuard) does not refuse: a
    heading path copied from the knowledge is skipped and the next line read instead, so with none left the
    answer is "" (not found). `complete` turns True once that sentence has ended (a line break or sentence
    end follows it), so decoding can stop there.
    """
    lines = text.split("\n")
    for index, line in enumerate(lines):
        answer = _clean(line)
        if answer and reject is not None and reject(answer):
            continue
        if answer:
            ended = index < len(lines) - 1 or _SENTENCE_END.search(line.strip()) is not None
            return answer, ended
    return "", False


def short_answer(text: str, reject: Reject | None = None) -> str:
    """The short answer read from a finished generation."""
    return read_answer(text, reject)[0]
