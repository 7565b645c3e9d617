"""Build a question/answer training set from a document with a local model (or an endpoint).

    python -m lab dataset build --doc assets/knowledge/llm_knowledge_guide.md --out data/qa_gen.jsonl \\
        --pairs-per-chunk 2 --max-chunks 4

The document is cut into chunks (lab.knowledge.rag's splitter); for each chunk the model is asked for N
question/answer pairs; every pair is validated (non-empty, within length limits, a question mark,
an answer that adds something to the question and is grounded in the chunk, no duplicate
question), and a chunk short of N kept pairs is asked again, with a new seed, up to `retries`
times. The output is JSONL in the `qa` format that lab.training.data.datasets loads for training: one
`{"question": ..., "answer": ...}` object per line (plus the source `chunk_id`). BuilderConfig, the
prompt, the JSON schema and the validator live in lab.training.data.qa_prompt; this module decodes
under the schema (or calls an endpoint) and runs the loop.

Why schema-constrained decoding: asked for JSON in plain words, SmolLM2-135M returns numbered
prose or half-closed objects (0 of 3 samples were valid for a 2-pair list). Here every decode step
masks the logits [1, V] to the tokens that keep the output a prefix of a JSON array of exactly N
`{"answer": string, "question": string}` objects (answer first, see `chunk_messages`; questions
open with a question word and end with '?'; both have length limits), so the output always
parses; the validator then only judges the content.

Why xgrammar (pinned 0.2.8) over the other maintained libraries, as tried with transformers 5.23 on
2 CPU threads and no network:
- xgrammar builds its tokenizer info for SmolLM2's 49,152-token BPE vocabulary in 0.13 s, compiles
  this schema in 1-2 s (cached per n afterwards), and its mask costs ~1.2 ms per token, next to
  hundreds of ms for the model's forward pass on a busy 2-core machine. Its CPU path never
  imports triton, which its wheel declares on Linux x86-64 (~1 GB installed; CUDA builds of torch
  bring it anyway; a CPU-only venv can `pip install --no-deps xgrammar==0.2.8 apache-tvm-ffi`).
  Two quirks shape `qa_schema`: a maxLength string lets raw control characters through (invalid
  for strict JSON parsers), and a bounded repeat above {m,128} in a pattern fails to compile.
- outlines 1.3.3 (outlines-core 0.2.14) works offline too, but compiling took 5-14 s and its
  transformers logits processor cost ~340 ms per token on this vocabulary, doubling decode time.
- lm-format-enforcer 0.11.3 does not import with transformers 5: its integration imports
  `transformers.tokenization_utils.PreTrainedTokenizerBase`, which no longer exists there.
- transformers-cfg 0.2.7 rejects transformers 5's tokenizer class ("Tokenizer not supported:
  TokenizersBackend"), and takes an EBNF grammar rather than a JSON schema.

The OpenAI-compatible endpoint path (`base_url`) sends the same prompt with JSON mode
(`response_format={"type": "json_object"}`) through the `openai` client the lab's remote models use
(lab.inference.endpoints.client) and runs the same validation.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import openai
import torch
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from lab.core.files import write_jsonl as write_rows
from lab.inference.endpoints import client, error_detail
from lab.inference.generate import prompt_ids
from lab.knowledge.documents import Document
from lab.knowledge.rag import split_document
from lab.training.data.qa_prompt import (
    BuilderConfig,
    chunk_messages,
    parse_pairs,
    qa_schema,
    question_key,
    validate_pair,
)

if TYPE_CHECKING:
    from lab.inference.runtime import Runtime

Progress = Callable[[int, int, str], None]
"""progress(done, total, message): called before the first chunk and after each one."""


@dataclass(frozen=True)
class QAPair:
    question: str
    answer: str
    chunk_id: int
    """Index of the chunk the pair was generated from (kept in the JSONL for review; loaders ignore it)."""


@dataclass(frozen=True)
class Rejection:
    chunk_id: int
    attempt: int
    reason: str
    item: str
    """The rejected pair as JSON, or the raw model output when it did not parse."""


@dataclass
class ChunkStats:
    chunk_id: int
    chars: int
    attempts: int = 0
    valid_json: int = 0
    """Attempts whose output parsed as the asked JSON shape."""
    accepted: int = 0
    rejected: int = 0
    new_tokens: int = 0
    seconds: float = 0.0


@dataclass
class BuildResult:
    pairs: list[QAPair]
    rejected: list[Rejection]
    chunks: list[ChunkStats]
    seconds: float

    @property
    def attempts(self) -> int:
        return sum(c.attempts for c in self.chunks)

    @property
    def valid_json_rate(self) -> float:
        return sum(c.valid_json for c in self.chunks) / self.attempts if self.attempts else 0.0

    @property
    def pairs_per_minute(self) -> float:
        return 60 * len(self.pairs) / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> dict:
        return {"pairs": len(self.pairs), "rejected": len(self.rejected), "chunks": len(self.chunks),
                "attempts": self.attempts, "valid_json_rate": round(self.valid_json_rate, 3),
                "seconds": round(self.seconds, 1), "pairs_per_minute": round(self.pairs_per_minute, 2),
                "new_tokens": sum(c.new_tokens for c in self.chunks)}


@dataclass(frozen=True)
class Attempt:
    """One generation call's output."""
    text: str
    new_tokens: int
    finish_reason: str
    """'stop' (the output ended by itself) or 'length' (the token budget ran out first)."""


PairGenerator = Callable[[str, int, float, int], Attempt]
"""generate(chunk, n_pairs, temperature, seed) -> Attempt: the local constrained model or an endpoint."""


# ---- generation -----------------------------------------------------------------------------

_compilers: dict[str, object] = {}
_compilers_lock = threading.Lock()


def grammar_compiler(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, key: str):
    """An xgrammar compiler for this tokenizer, built once per model key (~0.2 s for a 49k vocab).

    It caches compiled schemas itself, so asking again for the same n pairs costs nothing.
    """
    import xgrammar as xgr  # imported here: the rest of the lab never needs it
    with _compilers_lock:
        if key not in _compilers:
            stops = {tokenizer.eos_token_id} | set(_as_list(model.generation_config.eos_token_id))
            info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=model.config.vocab_size,
                                                      stop_token_ids=sorted(i for i in stops if i is not None))
            _compilers[key] = xgr.GrammarCompiler(info, max_threads=max(1, torch.get_num_threads()))
        return _compilers[key]


def _as_list(value) -> list:
    return [] if value is None else list(value) if isinstance(value, (list, tuple)) else [value]


def constrained_generate(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, input_ids: torch.Tensor,
                         compiled, max_new_tokens: int, temperature: float = 0.0, seed: int | None = None) -> Attempt:
    """Decode under an xgrammar grammar: each step only tokens that keep the output valid can win.

    `input_ids` [1, T]; `compiled` is an xgrammar CompiledGrammar for this tokenizer. Ends when the
    grammar is complete and the model's end token is taken ('stop'), or at the budget ('length').
    No repetition penalty: tried at 1.3 on SmolLM2-135M, it pushed answers away from the chunk's
    own words (which the question has just used) and made every answer ungrounded.
    """
    import xgrammar as xgr
    device = next(model.parameters()).device
    matcher = xgr.GrammarMatcher(compiled)
    bitmask = xgr.allocate_token_bitmask(1, compiled.tokenizer_info.vocab_size)  # [1, ceil(V/32)] int32
    cache = DynamicCache(config=model.config)
    rng = torch.Generator()
    if seed is not None:
        rng.manual_seed(seed)
    generated: list[int] = []
    finish = "length"
    with torch.no_grad():
        # Logits go to the CPU for masking and sampling: [1, V] floats a step is cheap next to the
        # forward pass, and xgrammar's CPU kernel then works the same on every device.
        logits = model(input_ids=input_ids.to(device), past_key_values=cache, use_cache=True).logits[:, -1, :]
        for _ in range(max_new_tokens):
            scores = logits.float().cpu()  # [1, V]
            matcher.fill_next_token_bitmask(bitmask)
            xgr.apply_token_bitmask_inplace(scores, bitmask)  # disallowed tokens -> -inf
            if temperature > 0:
                next_id = int(torch.multinomial(torch.softmax(scores / temperature, dim=-1), 1, generator=rng))
            else:
                next_id = int(scores.argmax(dim=-1))
            if not matcher.accept_token(next_id):
                raise RuntimeError(f"grammar refused token {next_id} that its own mask allowed")
            if matcher.is_terminated():  # the grammar was complete and a stop token was taken
                finish = "stop"
                break
            generated.append(next_id)
            logits = model(input_ids=torch.tensor([[next_id]], device=device), past_key_values=cache,
                           use_cache=True).logits[:, -1, :]
    return Attempt(tokenizer.decode(generated, skip_special_tokens=True), len(generated), finish)


def local_generator(loaded, cfg: BuilderConfig) -> PairGenerator:
    """A pair generator over a loaded model (call it inside the GPU slot and `sessions.use`)."""
    compiler = grammar_compiler(loaded.model, loaded.tokenizer, loaded.spec.key)

    def generate(chunk: str, n: int, temperature: float, seed: int) -> Attempt:
        compiled = compiler.compile_json_schema(json.dumps(qa_schema(n, cfg)), any_whitespace=False)
        ids = prompt_ids(loaded.tokenizer, chunk_messages(chunk, n))
        if ids.shape[1] + cfg.max_new_tokens > loaded.context_window:
            raise ValueError(f"a chunk prompt has {ids.shape[1]} tokens; with max_new_tokens={cfg.max_new_tokens} it "
                             f"exceeds the model's window of {loaded.context_window}; lower chunk_size")
        return constrained_generate(loaded.model, loaded.tokenizer, ids, compiled, cfg.max_new_tokens, temperature, seed)
    return generate


def endpoint_generator(cfg: BuilderConfig, timeout_s: float = 120.0) -> PairGenerator:
    """A pair generator over an OpenAI-compatible /chat/completions endpoint in JSON mode. Every failure is a
    ValueError naming the endpoint: an HTTP error with the server's own words, a timeout, no connection, or a
    reply that is not a chat completion."""
    url = cfg.base_url.rstrip("/") + "/chat/completions"
    api = client(cfg.base_url.rstrip("/"), os.environ.get(cfg.api_key_env, "").strip(), timeout_s)

    def generate(chunk: str, n: int, temperature: float, seed: int) -> Attempt:
        try:
            reply = api.chat.completions.create(
                model=cfg.endpoint_model, messages=chunk_messages(chunk, n, json_object=True), temperature=temperature,
                max_tokens=cfg.max_new_tokens, seed=seed, response_format={"type": "json_object"})
            choice = reply.choices[0]
            text = choice.message.content or ""
        except openai.APITimeoutError:  # before APIConnectionError, its parent class
            raise ValueError(f"endpoint {url} did not answer within {timeout_s:g} s") from None
        except openai.APIStatusError as exc:
            raise ValueError(f"endpoint {url} answered HTTP {exc.status_code}: {error_detail(exc)[:300]}") from None
        except openai.APIConnectionError as exc:
            raise ValueError(f"endpoint {url} is unreachable: {exc.__cause__ or exc}") from None
        except (ValueError, openai.APIResponseValidationError, AttributeError, IndexError, TypeError) as exc:
            raise ValueError(f"endpoint {url} did not answer with a chat completion "
                             f"({type(exc).__name__}: {str(exc)[:200]})") from None
        tokens = reply.usage.completion_tokens if reply.usage is not None else 0
        return Attempt(text, int(tokens or 0), "length" if choice.finish_reason == "length" else "stop")
    return generate


# ---- the build loop -------------------------------------------------------------------------

def build_from_chunks(chunks: list[str], cfg: BuilderConfig,
                      open_generator: Callable[[], AbstractContextManager[PairGenerator]],
                      progress: Progress | None = None) -> BuildResult:
    """Generate, validate and retry chunk by chunk.

    `open_generator()` is entered once per chunk and yields the pair generator for it: for the local
    model that context holds the GPU slot and pins the model; tests pass `lambda: nullcontext(fn)`.
    """
    start = time.perf_counter()
    pairs: list[QAPair] = []
    rejected: list[Rejection] = []
    stats: list[ChunkStats] = []
    seen: set[str] = set()
    if progress:
        progress(0, len(chunks), f"{len(chunks)} chunks, {cfg.pairs_per_chunk} pairs each")
    for chunk_id, chunk in enumerate(chunks):
        st = ChunkStats(chunk_id, len(chunk))
        t0 = time.perf_counter()
        with open_generator() as generate:
            _fill_chunk(chunk_id, chunk, cfg, generate, st, pairs, rejected, seen)
        st.seconds = time.perf_counter() - t0
        stats.append(st)
        if progress:
            progress(chunk_id + 1, len(chunks), f"chunk {chunk_id + 1}: {st.accepted} pairs kept, {st.rejected} "
                     f"rejected in {st.attempts} attempt(s), {st.seconds:.1f} s")
    return BuildResult(pairs, rejected, stats, time.perf_counter() - start)


def _fill_chunk(chunk_id: int, chunk: str, cfg: BuilderConfig, generate: PairGenerator, st: ChunkStats,
                pairs: list[QAPair], rejected: list[Rejection], seen: set[str]) -> None:
    for attempt in range(cfg.retries + 1):
        need = cfg.pairs_per_chunk - st.accepted
        if need == 0:
            return
        st.attempts += 1
        temperature = cfg.temperature if attempt == 0 else cfg.retry_temperature
        out = generate(chunk, need, temperature, cfg.seed * 1_000_003 + chunk_id * 101 + attempt)
        st.new_tokens += out.new_tokens
        items = parse_pairs(out.text, need)
        if items is None:
            why = "output cut at max_new_tokens" if out.finish_reason == "length" else "not the asked JSON shape"
            rejected.append(Rejection(chunk_id, attempt, f"invalid JSON ({why})", out.text))
            st.rejected += 1
            continue
        st.valid_json += 1
        for item in items:
            reason = validate_pair(item, chunk, seen, cfg)
            if reason is None:
                pairs.append(QAPair(item["question"].strip(), item["answer"].strip(), chunk_id))
                seen.add(question_key(item["question"]))
                st.accepted += 1
            else:
                rejected.append(Rejection(chunk_id, attempt, reason, json.dumps(item, ensure_ascii=False)))
                st.rejected += 1


def document_chunks(doc: Document, cfg: BuilderConfig) -> list[str]:
    chunks = split_document(doc, cfg.rag)
    return chunks[:cfg.max_chunks] if cfg.max_chunks else chunks


def build_dataset(runtime: Runtime, doc: Document, cfg: BuilderConfig, progress: Progress | None = None) -> BuildResult:
    """Question/answer pairs for a document: chunk, generate (constrained), validate, retry.

    Local generation takes the session manager's GPU slot once per chunk, so Compare and Arena
    requests can run between chunks of a long build instead of waiting for all of it.
    """
    chunks = document_chunks(doc, cfg)
    if cfg.base_url:
        generate = endpoint_generator(cfg)
        return build_from_chunks(chunks, cfg, lambda: nullcontext(generate), progress)
    if cfg.max_new_tokens > runtime.settings.max_new_tokens_limit:
        raise ValueError(f"max_new_tokens={cfg.max_new_tokens} is above this lab's limit of "
                         f"{runtime.settings.max_new_tokens_limit}")
    spec = runtime.spec(cfg.model_id)
    caller = runtime.sessions.new_caller("dataset")

    @contextmanager
    def open_generator() -> Iterator[PairGenerator]:
        with runtime.sessions.gpu_slot(caller), runtime.sessions.use(spec) as loaded:
            yield local_generator(loaded, cfg)

    return build_from_chunks(chunks, cfg, open_generator, progress)


def write_jsonl(pairs: list[QAPair], path: str | Path) -> Path:
    """Write pairs as `qa`-format JSONL (question, answer, plus the source chunk_id for review)."""
    return write_rows(path, (asdict(pair) for pair in pairs))
