"""The one question prompt every Compare method uses, and how a short answer is read back.

    python -m lab ask --question "What does CAG stand for?" --methods base,rag,cag,full

Every method sends the same chat: an optional knowledge block (the whole document for CAG and
full context, the retrieved chunks for RAG, nothing for base and fine-tuned adapters), then an
instruction to answer in a few words, then the question. The rendered chat is split just before
the question into a *prefix* (knowledge + instruction) and a *suffix* (question + the template's
end-of-turn and assistant header). The two halves are tokenized separately and concatenated, so
CAG (prefix prefilled once, suffix per question) and full context (prefix + suffix prefilled
together) feed the model exactly the same token ids and greedy decoding gives the same answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

PROMPT_VERSION = 1
"""Bump whenever the wording below changes: saved CAG caches are keyed on it."""

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
        return torch.cat([self.prefix_ids, self.suffix_ids], dim=1)


def _messages(knowledge: str | None) -> list[dict]:
    head = WITH_KNOWLEDGE.format(knowledge=knowledge.strip()) if knowledge else WITHOUT_KNOWLEDGE
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": head + QUESTION.format(question=_SLOT)}]


def prompt_texts(tokenizer: PreTrainedTokenizerBase, question: str, knowledge: str | None = None) -> tuple[str, str]:
    """The rendered prompt as (prefix, suffix) text; prefix + suffix is the whole chat."""
    question = question.strip()
    if not question:
        raise ValueError("The question is empty; type a question first.")
    messages = _messages(knowledge)
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


def split_prompt(tokenizer: PreTrainedTokenizerBase, question: str, knowledge: str | None = None) -> PromptParts:
    """Token ids of the question prompt, cut into the cacheable prefix and the per-question suffix."""
    prefix, suffix = prompt_texts(tokenizer, question, knowledge)
    return PromptParts(_ids(tokenizer, prefix), _ids(tokenizer, suffix))


def suffix_ids(tokenizer: PreTrainedTokenizerBase, question: str, knowledge: str | None = None) -> torch.Tensor:
    """[1, S] only the per-question half (CAG: the prefix is already in the cache)."""
    return _ids(tokenizer, prompt_texts(tokenizer, question, knowledge)[1])


# ---- reading the answer back --------------------------------------------------------------------

_LEAD_IN = re.compile(r"^(?:(?:the\s+)?(?:short\s+)?answer(?:\s+to\s+(?:the|this)\s+question)?\s*(?:is)?\s*[:\-]?|a:)\s*",
                      re.IGNORECASE)
_ECHO = re.compile(r"^\s*question\s*:", re.IGNORECASE)
_COPULA = re.compile(r"\b(?:is|are|was|were|stands for|equals|means)\b:?\s+")
_HEDGE = re.compile(r"^(?:typically|usually|often|commonly|generally|normally|called)\s+", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s")  # "8,192" and "0.01" have no space after the dot


def _clean(line: str) -> str:
    if _ECHO.match(line):  # the model repeating the question line is not an answer; read on
        return ""
    line = _LEAD_IN.sub("", line.strip())
    line = _SENTENCE_END.split(line, maxsplit=1)[0].strip()
    # A small model often echoes the question ("A typical weight decay is 0.01"): keep what follows
    # the first linking verb, which is where the answer sits in such a sentence.
    match = _COPULA.search(line)
    if match and match.end() < len(line):
        line = _HEDGE.sub("", line[match.end():])
    return line.strip().rstrip(".").strip().strip("\"'`*").strip()


def read_answer(text: str) -> tuple[str, bool]:
    """(short answer, complete) from generated text; the same rule for every method.

    The answer is the first sentence of the first line that still says something once lead-ins
    such as "The answer is:" are removed. `complete` turns True once that sentence has ended (a
    line break or sentence end follows it), so decoding can stop there.
    """
    lines = text.split("\n")
    for index, line in enumerate(lines):
        answer = _clean(line)
        if answer:
            ended = index < len(lines) - 1 or _SENTENCE_END.search(line.strip()) is not None
            return answer, ended
    return "", False


def short_answer(text: str) -> str:
    """The short answer read from a finished generation."""
    return read_answer(text)[0]
