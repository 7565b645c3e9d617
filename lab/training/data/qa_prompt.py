"""What the Q&A dataset builder asks for and what it keeps: its config, the prompt, the JSON schema, the validator.

    python -c "from lab.training.data.qa_prompt import validate_pair as v; print(v({'question': 'What is RAG?',
        'answer': 'retrieval augmented generation'}, 'RAG is retrieval augmented generation.'))"

BuilderConfig lives here because its limits are the schema's and the validator's: the schema
(`qa_schema`) stops the decoder at max_question_chars / max_answer_chars, and `validate_pair`
rejects what reaches them. lab.training.data.builder runs the generation and the build loop with
these and explains why the output is schema-constrained.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from dataclasses import dataclass

from lab.knowledge.configs import RagConfig

SYSTEM_PROMPT = "You write quiz questions about a text. Every answer is copied from the text."

STOPWORDS = frozenset("""a an the of to in on at by for from with and or but is are was were be been being it its
this that these those as into than then so such not no do does did can could will would should may might
what which who whom whose when where why how there their they them he she his her we our you your i""".split())
"""Words ignored when measuring how much of an answer occurs in its chunk."""


@dataclass
class BuilderConfig:
    """How a document becomes question/answer pairs."""

    pairs_per_chunk: int = 2
    """Pairs asked of the model for each chunk. More pairs per chunk means fewer prompts but, on a
    small model, more near-duplicate questions (rejected) and longer outputs per call."""
    chunk_size: int = 600
    """Maximum chunk length in characters. Smaller chunks give more focused questions and shorter
    prompts; larger ones give the model more to ask about per call."""
    chunk_overlap: int = 60
    """Characters shared by neighbouring chunks, so a fact on a boundary is whole in one of them."""
    max_chunks: int | None = None
    """Use only the first K chunks (None = all); handy to preview a large document quickly."""
    max_new_tokens: int = 320
    """Token budget of one generation call (all N pairs). If the JSON is not closed within it the
    attempt counts as invalid JSON and the chunk is retried."""
    temperature: float = 0.0
    """Sampling temperature of the first attempt per chunk (0 = greedy, the model's best guess)."""
    retry_temperature: float = 0.8
    """Temperature of retries. Retries use a new seed; above 0 that makes them differ from a
    greedy first attempt, which would otherwise just be repeated."""
    retries: int = 2
    """Extra attempts per chunk while it has fewer than `pairs_per_chunk` accepted pairs (0 = one try)."""
    seed: int = 0
    """Base random seed; attempt a of chunk c samples with a seed derived from (seed, c, a)."""
    max_question_chars: int = 120
    """Length at which a question is rejected (at most 128). The JSON schema stops the decoder there,
    so a question that reaches it was cut off; lowering it stops runaway questions sooner."""
    max_answer_chars: int = 128
    """Length at which an answer is rejected (at most 128), enforced the same way. Lower values
    force shorter answers but cut more of a small model's copied sentences (then rejected)."""
    min_answer_overlap: float = 0.5
    """Share (0..1) of the answer's content words that must occur in the chunk. Higher rejects
    more invented answers and more legitimate paraphrases."""
    model_id: str | None = None
    """Local model: 'embedded', a folder or a Hub id (None = the lab's default model)."""
    base_url: str | None = None
    """Optional OpenAI-compatible server, e.g. http://localhost:8000/v1 (vLLM); when set, no local
    model is loaded and generation uses JSON mode instead of the local grammar constraint."""
    endpoint_model: str = ""
    """Model name sent to the endpoint (required when base_url is set)."""
    api_key_env: str = "OPENAI_API_KEY"
    """Name of the environment variable holding the endpoint's API key (unset = no key sent)."""

    def __post_init__(self) -> None:
        for name in ("pairs_per_chunk", "chunk_size", "chunk_overlap", "max_new_tokens", "retries", "seed",
                     "max_question_chars", "max_answer_chars"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be a whole number, got {value!r}")
        if not 1 <= self.pairs_per_chunk <= 10:
            raise ValueError(f"pairs_per_chunk must be between 1 and 10, got {self.pairs_per_chunk}")
        if self.chunk_size < 100:
            raise ValueError(f"chunk_size must be >= 100 characters, got {self.chunk_size}")
        if not 0 <= self.chunk_overlap < self.chunk_size:
            raise ValueError(f"chunk_overlap must be >= 0 and < chunk_size ({self.chunk_size}), got {self.chunk_overlap}")
        if self.max_chunks is not None and (isinstance(self.max_chunks, bool) or not isinstance(self.max_chunks, int)
                                            or self.max_chunks < 1):
            raise ValueError(f"max_chunks must be a whole number >= 1 or empty (all chunks), got {self.max_chunks!r}")
        if self.max_new_tokens < 16:
            raise ValueError(f"max_new_tokens must be >= 16 (a JSON pair needs about 15 tokens), got {self.max_new_tokens}")
        for name in ("temperature", "retry_temperature"):
            if not 0 <= getattr(self, name) <= 2:
                raise ValueError(f"{name} must be between 0 and 2 (0 = greedy), got {getattr(self, name)}")
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")
        if not 20 <= self.max_question_chars <= MAX_REPEAT:
            raise ValueError(f"max_question_chars must be between 20 and {MAX_REPEAT}, got {self.max_question_chars}")
        if not 2 <= self.max_answer_chars <= MAX_REPEAT:
            raise ValueError(f"max_answer_chars must be between 2 and {MAX_REPEAT}, got {self.max_answer_chars}")
        if not 0 <= self.min_answer_overlap <= 1:
            raise ValueError(f"min_answer_overlap must be between 0 and 1, got {self.min_answer_overlap}")
        if self.base_url is not None and not re.match(r"https?://", self.base_url):
            raise ValueError(f"base_url must start with http:// or https://, got {self.base_url!r}")
        if self.base_url and not self.endpoint_model.strip():
            raise ValueError("endpoint_model must name the endpoint's model when base_url is set")

    @property
    def rag(self) -> RagConfig:
        return RagConfig(chunk_size=self.chunk_size, chunk_overlap=self.chunk_overlap)



QUESTION_WORDS = ("What", "Which", "Who", "When", "Where", "Why", "How", "Is", "Are", "Does", "Do", "Can")
"""Words a generated question may start with. Constraining the opening word (and the closing '?')
keeps a small model from writing headings or statements where a question belongs."""

TEXT_CHAR = r'[^"\\\u0000-\u001f\ud800-\udfff]'
"""Regex class of a character inside an answer: no quote or backslash (so no JSON escapes), no
control character and no lone surrogate. xgrammar's own maxLength strings let control characters
through, which strict JSON parsers reject, so both fields use patterns instead."""

QUESTION_CHAR = r'[^?"\\\u0000-\u001f\ud800-\udfff]'
"""The same without '?', so a question has exactly one '?', at its end."""

MAX_REPEAT = 128
"""Largest bounded repeat {m,n} xgrammar 0.2.8 compiles in a pattern (it fails above that)."""


def qa_schema(n: int, cfg: BuilderConfig) -> dict:
    """JSON schema of the model's output: an array of exactly n {answer, question} objects.

    Length limits are bounded repeats inside the patterns (xgrammar ignores maxLength next to a
    pattern); the decoder is forced to close a string at its limit.
    """
    body = cfg.max_question_chars - max(map(len, QUESTION_WORDS)) - 2  # opening word, space, '?'
    question = f"^({'|'.join(QUESTION_WORDS)}) {QUESTION_CHAR}{{3,{body}}}[?]$"
    answer = f"^{TEXT_CHAR}{{1,{cfg.max_answer_chars}}}$"
    # Property order is generation order: the answer (a fact from the text) comes first.
    return {"type": "array", "minItems": n, "maxItems": n,
            "items": {"type": "object", "additionalProperties": False, "required": ["answer", "question"],
                      "properties": {"answer": {"type": "string", "pattern": answer},
                                     "question": {"type": "string", "pattern": question}}}}


def chunk_messages(chunk: str, n: int, json_object: bool = False) -> list[dict]:
    """The chat asking for n pairs about one chunk, answer first.

    Answer first is deliberate: asked for the question first, SmolLM2-135M wrote a generic
    question ("What is the difference between RAG and CAG?") and then an answer that ran on past
    any limit; asked to pick a fact and then the question it answers, it copies a sentence from the
    text and asks about that sentence. `json_object` wraps the list as {"pairs": [...]}, which the
    JSON mode of OpenAI-compatible servers requires (it only returns objects).
    """
    item = '{"answer": "...", "question": "...?"}'
    example = "[" + ", ".join([item] * min(n, 2)) + (", ..." if n > 2 else "") + "]"
    shape = f'{{"pairs": {example}}}' if json_object else example
    facts = "1 short fact" if n == 1 else f"{n} different short facts"
    return [{"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": f"Text:\n{chunk.strip()}\n\nPick {facts} from this text. For each, give the "
                                        f"fact as the answer and write the question it answers. Reply with JSON "
                                        f"only, like {shape}"}]


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def question_key(question: str) -> str:
    """What two questions share when they count as duplicates (case, spacing and punctuation ignored)."""
    return " ".join(_words(question))


def validate_pair(pair: object, chunk: str, seen: Collection[str] = (), cfg: BuilderConfig | None = None) -> str | None:
    """Why a generated pair is rejected, or None when it is kept.

    `seen` holds `question_key`s of the pairs already accepted for this document.
    """
    cfg = cfg or BuilderConfig()
    if not isinstance(pair, dict) or not isinstance(pair.get("question"), str) or not isinstance(pair.get("answer"), str):
        return "not an object with string fields 'question' and 'answer'"
    question, answer = pair["question"].strip(), pair["answer"].strip()
    if not question:
        return "empty question"
    if not answer:
        return "empty answer"
    # The schema stops the decoder at the limit, so a text that reaches it was almost surely cut off.
    if len(question) >= cfg.max_question_chars:
        return f"question too long ({len(question)} characters, limit {cfg.max_question_chars})"
    if len(answer) >= cfg.max_answer_chars:
        return f"answer too long ({len(answer)} characters, limit {cfg.max_answer_chars})"
    if "?" not in question:
        return "question has no '?'"
    words = _words(answer)
    content = [w for w in words if w not in STOPWORDS] or words
    if not content:
        return "answer has no words"
    if set(content) <= set(_words(question)):
        return "answer only repeats words of the question"
    in_chunk = set(_words(chunk))
    overlap = sum(w in in_chunk for w in content) / len(content)
    if overlap < cfg.min_answer_overlap:
        return (f"answer not grounded in the chunk ({overlap:.0%} of its words occur there, "
                f"need {cfg.min_answer_overlap:.0%})")
    if question_key(question) in seen:
        return "duplicate question"
    return None


def parse_pairs(text: str, n: int) -> list | None:
    """The list of n items in a model's output (a bare list or {"pairs": list}), or None."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return None
    if isinstance(data, dict) and isinstance(data.get("pairs"), list):
        data = data["pairs"]
    return data if isinstance(data, list) and len(data) == n else None
