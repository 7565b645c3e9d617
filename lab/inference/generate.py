"""The one streaming generator every feature uses (Playground, Compare, Arena, evaluation).

    python -m lab generate --prompt "What is the capital of France?" --json

It is a plain token-by-token decode loop over a transformers model and a `DynamicCache`
rather than `model.generate` in a thread: that makes time to first token exact, lets CAG pass
a pre-filled cache and only the question's tokens, and needs no streamer thread.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace

import torch
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase
from transformers.generation.logits_process import (
    LogitsProcessorList,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from lab.inference.configs import GenerationSettings


@dataclass
class Timings:
    """What one answer cost. queue_s + ttft_s is what the person waited for the first token."""

    prompt_tokens: int = 0
    """Tokens prefilled by this call (for CAG only the question; the cache holds the rest)."""
    context_tokens: int = 0
    """Tokens the model attended to at the first step: cached + prompt."""
    new_tokens: int = 0
    ttft_s: float = 0.0
    """Time to first token once the request runs: prefill plus choosing the first token (in a batch, the
    forward passes it shares with other requests). Waiting before that is queue_s."""
    decode_tokens_per_s: float = 0.0
    """Tokens per second after the first one."""
    total_s: float = 0.0
    """From the request's first forward pass to its last token (queue_s not included)."""
    queue_s: float = 0.0
    """Seconds between asking and the first forward pass that includes this request: waiting behind work that
    needs the model alone (loading, adapters, the explicit CAG cache) and, when batched, for room in the batch."""

    def as_dict(self) -> dict:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


@dataclass
class GenerationEvent:
    text: str
    """Everything generated so far."""
    delta: str
    timings: Timings
    done: bool = False
    finish_reason: str | None = None
    """'eos' or 'length' on the last event."""


class TextStream:
    """The text of a growing list of token ids, a few tokens at a time: each new token costs a decode of a window of
    two or three tokens instead of the whole answer (at 2,048 tokens, SmolLM2's tokenizer takes 0.5 ms to decode
    them all, so decoding everything again on each token cost about 0.5 s per answer).

    The window starts at the tokens of the previous piece, so a tokenizer that drops the leading space of the first
    token it decodes (SentencePiece) or merges spaces across tokens does it to text that is already out, and the
    piece is what the full decode adds. A window that ends inside a multi-byte character (U+FFFD) is held back until
    the character is complete. `text` is always a prefix of the full decode; the caller takes the final text from
    one full decode (`full_text`)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.text = ""
        """The pieces so far, joined."""
        self._start = 0  # ids[_start:_read] decoded again as context for the next piece
        self._read = 0  # ids[:_read] are in self.text

    def add(self, new_ids: list[int]) -> str:
        """Append token ids; return the text they complete ('' while a character is unfinished)."""
        self.ids.extend(new_ids)
        done = self._decode(self._start, self._read)
        window = self._decode(self._start, len(self.ids))
        if window.endswith("\ufffd") or len(window) <= len(done):
            return ""
        if not window.startswith(done):  # the tokenizer rewrote the context itself: trust only the full decode
            full = self.full_text()
            if not full.startswith(self.text) or full.endswith("\ufffd"):
                return ""
            piece = full[len(self.text):]
        else:
            piece = window[len(done):]
        self._start, self._read = self._read, len(self.ids)
        self.text += piece
        return piece

    def full_text(self) -> str:
        return self._decode(0, len(self.ids))

    def _decode(self, start: int, end: int) -> str:
        return self.tokenizer.decode(self.ids[start:end], skip_special_tokens=True) if end > start else ""


def prompt_ids(tokenizer: PreTrainedTokenizerBase, messages: list[dict] | str, system: str | None = None) -> torch.Tensor:
    """Token ids [1, T] for a chat, through the model's chat template when it has one."""
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    if system:
        messages = [{"role": "system", "content": system}, *messages]
    if tokenizer.chat_template:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    else:
        text = "\n".join(m["content"] for m in messages) + "\n"
    return tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids


def stop_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, extra: tuple[int, ...]) -> set[int]:
    ids = set(extra)
    for source in (model.generation_config.eos_token_id, tokenizer.eos_token_id):
        if source is not None:
            ids |= set(source) if isinstance(source, (list, tuple)) else {source}
    return ids


def _processors(settings: GenerationSettings) -> LogitsProcessorList:
    procs = LogitsProcessorList()
    if settings.repetition_penalty != 1.0:
        procs.append(RepetitionPenaltyLogitsProcessor(settings.repetition_penalty))
    if settings.temperature > 0:
        procs.append(TemperatureLogitsWarper(settings.temperature))
        if settings.top_k > 0:
            procs.append(TopKLogitsWarper(settings.top_k))
        if settings.top_p < 1.0:
            procs.append(TopPLogitsWarper(settings.top_p))
    return procs


def stream_generate(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, input_ids: torch.Tensor,
                    settings: GenerationSettings, past_key_values: DynamicCache | None = None,
                    queue_s: float = 0.0) -> Iterator[GenerationEvent]:
    """Yield one event per new token, then a final event with done=True and full timings.

    `input_ids` [1, T] are the tokens not yet in `past_key_values`. A passed cache is extended
    in place (the caller crops it back, as CAG does); without one a fresh cache is used.
    `queue_s` is how long the caller waited for the model, reported in the timings.
    """
    device = next(model.parameters()).device
    ids = input_ids.to(device)
    cache = past_key_values if past_key_values is not None else DynamicCache(config=model.config)
    timings = Timings(prompt_tokens=ids.shape[1], context_tokens=cache.get_seq_length() + ids.shape[1], queue_s=queue_s)
    stops = stop_ids(model, tokenizer, settings.stop_token_ids)
    procs = _processors(settings)
    rng = torch.Generator(device=device)
    if settings.seed is not None:
        rng.manual_seed(settings.seed)
    seen = ids  # [1, T + generated]: what the repetition penalty looks at
    out = TextStream(tokenizer)
    finish = "length"
    start = time.perf_counter()
    with torch.no_grad():
        # logits_to_keep=1: only the last position's logits are needed; projecting every prompt
        # position onto the vocabulary would cost T x V x hidden extra (about 10% of a long prefill).
        logits = model(input_ids=ids, past_key_values=cache, use_cache=True,
                       logits_to_keep=1).logits[:, -1, :].float()  # [1, V]
        for step in range(settings.max_new_tokens):
            scores = procs(seen, logits)
            if settings.temperature > 0:
                next_id = int(torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=rng))
            else:
                next_id = int(scores.argmax(dim=-1))
            if step == 0:
                timings.ttft_s = time.perf_counter() - start
            if next_id in stops:
                finish = "eos"
                break
            delta = out.add([next_id])
            if delta:  # nothing while a multi-byte character is unfinished
                timings.new_tokens = len(out.ids)
                yield GenerationEvent(out.text, delta, finish_timings(timings, start))
            if step + 1 < settings.max_new_tokens:
                step_ids = torch.tensor([[next_id]], device=device)
                seen = torch.cat([seen, step_ids], dim=1)
                logits = model(input_ids=step_ids, past_key_values=cache, use_cache=True).logits[:, -1, :].float()
    timings.new_tokens = len(out.ids)
    final_text = out.full_text()  # the exact text; the pieces streamed are a prefix of it
    yield GenerationEvent(final_text, final_text[len(out.text):], finish_timings(timings, start), True, finish)


def finish_timings(timings: Timings, start: float) -> Timings:
    """A copy of `timings` with total_s and decode speed as of now (`start`: the first forward pass, perf_counter)."""
    timings.total_s = time.perf_counter() - start
    decode_s = timings.total_s - timings.ttft_s
    timings.decode_tokens_per_s = (timings.new_tokens - 1) / decode_s if timings.new_tokens > 1 and decode_s > 0 else 0.0
    return replace(timings)  # a shallow copy: the fields are numbers (asdict would copy them recursively)


def generate_text(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, input_ids: torch.Tensor,
                  settings: GenerationSettings, past_key_values: DynamicCache | None = None) -> GenerationEvent:
    """Run the stream to the end and return the final event (for batch work and tests)."""
    event = None
    for event in stream_generate(model, tokenizer, input_ids, settings, past_key_values):  # noqa: B007 - the last one
        pass
    assert event is not None and event.done
    return event
