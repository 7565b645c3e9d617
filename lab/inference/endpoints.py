"""Remote models: an OpenAI-compatible server (vLLM on a GPU box, `transformers serve`) as a model choice.

    LAB_ENDPOINTS='[{"name": "gpu", "base_url": "http://gpu-box:8000/v1", "model": "Qwen/Qwen2.5-7B-Instruct",
                     "kind": "vllm", "api_key_env": "VLLM_API_KEY"}]' python -m lab generate --model endpoint:gpu --prompt "Hi"

A model id `endpoint:<name>` names an entry of LAB_ENDPOINTS (lab.core.settings). Playground, Compare,
Arena and evaluation send such requests here instead of to the session manager: no local model is
loaded and no GPU slot is taken, the server batches the requests of everyone.

The client is the `openai` package, not hand-written SSE over httpx: it is the reference client of
this API, parses the server-sent events (including an `error` event in the middle of a stream), and
raises typed errors (connection, timeout, HTTP status) that map one to one onto the messages below.
`transformers serve` needs the same package, so it costs no extra dependency. Retries are off: a
person is waiting, and a clear message now beats the same failure after a back-off.

Timings are measured on arrival, the way lab.inference.generate measures them locally: time to first
token from sending the request to the first piece of text, decode tokens/s from the arrival of the
first to the last piece. Prompt and context token counts come from the server's usage block (asked
for with stream_options include_usage); a server that sends none leaves them None (unknown).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from functools import lru_cache

import httpx
import openai

from lab.core.errors import EndpointError
from lab.core.settings import LabSettings
from lab.inference.generate import GenerationEvent, GenerationSettings, Timings

ENDPOINT_PREFIX = "endpoint:"
"""Model ids of this form name an entry of LAB_ENDPOINTS: `endpoint:<name>`."""

NO_KEY = "EMPTY"
"""Sent when an endpoint has no api_key_env: the client needs some key, and a server without one ignores it."""


@dataclass(frozen=True)
class Endpoint:
    """One remote OpenAI-compatible server, as checked by lab.core.settings.parse_endpoints."""

    name: str
    """What model boxes show, as `endpoint:<name>`."""
    base_url: str
    """The API root the OpenAI client uses, ending in /v1 for vLLM and `transformers serve`."""
    model: str
    """The served model name sent with every request (vLLM: --served-model-name, or a loaded LoRA's lora_name)."""
    api_key_env: str | None = None
    """The environment variable holding the API key (never the key itself); None = the server takes no key."""
    kind: str = "openai"
    """'vllm' also sends top_k, repetition_penalty, stop_token_ids and a per-user cache_salt, which vLLM accepts
    beside the OpenAI fields; 'openai' sends only the OpenAI API's fields (temperature, top_p, seed,
    max_tokens), so top_k and repetition_penalty are not applied there."""
    timeout_s: float = 60.0
    """Longest wait to connect and between two pieces of a streamed answer (not for the whole answer)."""

    @property
    def model_id(self) -> str:
        return f"{ENDPOINT_PREFIX}{self.name}"

    def api_key(self) -> str:
        if self.api_key_env is None:
            return NO_KEY
        key = os.environ.get(self.api_key_env, "").strip()
        if not key:
            raise EndpointError(f"Endpoint '{self.name}' reads its API key from the environment variable "
                                f"{self.api_key_env}, which is not set; set it and restart the lab, or pick another model.")
        return key


def is_endpoint(model_id: str | None) -> bool:
    return bool(model_id) and model_id.strip().startswith(ENDPOINT_PREFIX)


def configured(settings: LabSettings) -> list[Endpoint]:
    """Every endpoint of LAB_ENDPOINTS, in file order."""
    return [Endpoint(**entry) for entry in settings.endpoints]


def model_ids(settings: LabSettings) -> list[str]:
    """`endpoint:<name>` for every configured endpoint, as model boxes offer them."""
    return [e.model_id for e in configured(settings)]


def resolve(settings: LabSettings, model_id: str) -> Endpoint:
    """The endpoint a model id `endpoint:<name>` names; an unknown name says which names exist."""
    name = model_id.strip()[len(ENDPOINT_PREFIX):].strip()
    known = configured(settings)
    for endpoint in known:
        if endpoint.name == name:
            return endpoint
    if not known:
        raise EndpointError(f"There is no endpoint '{name}': LAB_ENDPOINTS is not set, so no remote server is "
                            "configured. Set LAB_ENDPOINTS to a YAML/JSON file listing them (README, 'Past one box: "
                            "vLLM') and restart, or pick a local model.")
    raise EndpointError(f"There is no endpoint '{name}' in LAB_ENDPOINTS; the configured ones are "
                        f"{', '.join(e.model_id for e in known)}. Pick one of them or add '{name}' to the file.")


def cache_salt(caller: str) -> str:
    """vLLM's prefix-cache key for one requester: requests with different salts never reuse each other's cached
    prefixes, so nobody can time another user's prompts. A hash, so the server never sees the name.

    `caller` is the caller id of a group of requests (session manager's new_caller): when it names its user
    ('alice:compare-7') the salt is the user's, so all of alice's questions on a document share its cached
    prefix (a second question is as fast as CAG) and never bob's; an id without a user keeps its group alone."""
    user, named, _ = caller.partition(":")
    return hashlib.sha256(f"llm-lab:{user if named else caller}".encode()).hexdigest()[:32]


def request_body(endpoint: Endpoint, messages: list[dict], settings: GenerationSettings, user: str | None = None,
                 model: str | None = None) -> dict:
    """Keyword arguments of `chat.completions.create` for one streamed request (tests read them too)."""
    body: dict = {"model": model or endpoint.model, "messages": messages, "stream": True,
                  "stream_options": {"include_usage": True}, "max_tokens": settings.max_new_tokens,
                  "temperature": settings.temperature}
    # Sampling knobs are sent even at their neutral values, so a server's own defaults (vLLM applies the
    # model's generation_config.json unless started with --generation-config vllm) cannot change them.
    sampling = settings.temperature > 0
    if sampling:
        body["top_p"] = settings.top_p
    if settings.seed is not None:
        body["seed"] = settings.seed
    if endpoint.kind == "vllm":
        extra: dict = {"repetition_penalty": settings.repetition_penalty}
        if sampling:
            extra["top_k"] = settings.top_k or -1  # -1: every token (vLLM versions differ on whether 0 means that)
        if settings.stop_token_ids:
            extra["stop_token_ids"] = list(settings.stop_token_ids)
        if user:
            extra["cache_salt"] = cache_salt(user)
        body["extra_body"] = extra
    return body


@lru_cache(maxsize=32)
def client(base_url: str, api_key: str, timeout_s: float) -> openai.OpenAI:
    """The lab's OpenAI client for one server: `timeout_s` to connect and between two pieces of an answer, no
    retries (a retry would hide the failure the message explains and double the wait). One client (one connection
    pool) per server and key, shared by every request of the process: model requests and the Q&A builder."""
    return openai.OpenAI(base_url=base_url, api_key=api_key or NO_KEY, timeout=timeout_s, max_retries=0)


def error_detail(exc: openai.APIStatusError) -> str:
    """The server's own words from an error body: OpenAI/vLLM {'error': {'message'}} or {'message'}, FastAPI {'detail'}."""
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        for key in ("message", "detail"):
            if isinstance(inner, dict) and inner.get(key):
                return str(inner[key])
    return str(exc.message)


def explain(endpoint: Endpoint, model: str, exc: Exception) -> EndpointError:
    """One clear message for what went wrong talking to an endpoint: which one, what happened, what to do."""
    where = f"Endpoint '{endpoint.name}' ({endpoint.base_url})"
    if isinstance(exc, (openai.APITimeoutError, httpx.TimeoutException)):
        return EndpointError(f"{where} did not answer within {endpoint.timeout_s:g} s. The server may be overloaded, "
                             "still loading its model or stuck; try again, or raise timeout_s for it in LAB_ENDPOINTS.")
    if isinstance(exc, openai.APIStatusError):
        status, detail = exc.status_code, error_detail(exc)
        if status == 404 or (status == 400 and model in detail):
            return EndpointError(f"{where} does not serve a model named '{model}' (HTTP {status}: {detail}). Set model "
                                 f"in LAB_ENDPOINTS to a name it serves (GET {endpoint.base_url}/models lists them; a "
                                 "LoRA adapter must first be loaded with POST /v1/load_lora_adapter).")
        if status in (401, 403):
            hint = (f"check the key in {endpoint.api_key_env}" if endpoint.api_key_env
                    else "set api_key_env for it in LAB_ENDPOINTS to the variable holding the key")
            return EndpointError(f"{where} refused the API key (HTTP {status}: {detail}); {hint}.")
        if status >= 500:
            return EndpointError(f"{where} failed on the server side (HTTP {status}: {detail}). Look at the server's log; "
                                 "try again or pick another model.")
        return EndpointError(f"{where} rejected the request (HTTP {status}: {detail}). Change the settings it names "
                             "(for example max new tokens against the model's window) or pick another model.")
    if isinstance(exc, (openai.APIConnectionError, httpx.HTTPError)):
        cause = exc.__cause__ or exc
        return EndpointError(f"{where} cannot be reached ({type(cause).__name__}: {cause}). Check that the server is "
                             "running and that base_url in LAB_ENDPOINTS is right, or pick another model.")
    return EndpointError(f"{where} reported an error in the middle of the answer ({type(exc).__name__}: {exc}). "
                         "Try again; if it repeats, look at the server's log or pick another model.")


def stream_chat(endpoint: Endpoint, messages: list[dict], settings: GenerationSettings, user: str | None = None,
                model: str | None = None) -> Iterator[GenerationEvent]:
    """Stream one chat answer over SSE: an event per piece of text, then a final one with done=True.

    `user` keys vLLM's prefix cache (cache_salt); `model` overrides the served name (a LoRA loaded on
    the server). Closing the generator closes the HTTP stream, and the server stops generating.
    """
    body = request_body(endpoint, messages, settings, user, model)
    served = body["model"]
    api = client(endpoint.base_url, endpoint.api_key(), endpoint.timeout_s)
    timings = Timings(prompt_tokens=None, context_tokens=None)  # unknown until the usage block arrives
    text, finish, pieces = "", None, 0
    first_at = last_at = None
    start = time.perf_counter()
    try:
        stream = api.chat.completions.create(**body)
        try:
            for chunk in stream:
                if chunk.usage is not None:  # vLLM: a last chunk without choices; transformers serve: on the last one
                    timings.prompt_tokens = timings.context_tokens = chunk.usage.prompt_tokens
                    timings.new_tokens = chunk.usage.completion_tokens
                for choice in chunk.choices:
                    delta = choice.delta.content if choice.delta else None
                    if delta:
                        last_at = time.perf_counter()
                        if first_at is None:
                            first_at = last_at
                            timings.ttft_s = first_at - start
                        pieces += 1
                        text += delta
                        timings.new_tokens = pieces
                        yield GenerationEvent(text, delta, _measure(timings, start, first_at, last_at, pieces))
                    if choice.finish_reason:
                        finish = choice.finish_reason
        finally:
            stream.close()
    except (openai.APIError, httpx.HTTPError) as exc:
        raise explain(endpoint, served, exc) from exc
    finish = "eos" if finish == "stop" else finish  # OpenAI says 'stop' where the local loop says 'eos'
    final = _measure(timings, start, first_at, last_at, pieces)
    final.new_tokens = timings.new_tokens  # the server's count when it sent usage (it may include the end token)
    yield GenerationEvent(text, "", final, True, finish)


def _measure(timings: Timings, start: float, first_at: float | None, last_at: float | None, tokens: int) -> Timings:
    """A copy of `timings` with total and decode speed as of now; `tokens` pieces arrived by `last_at`."""
    timings.total_s = time.perf_counter() - start
    span = (last_at - first_at) if first_at is not None and last_at is not None else 0.0
    # A piece of SSE text is one token on vLLM and transformers serve (vLLM's --stream-interval can merge a few).
    timings.decode_tokens_per_s = (tokens - 1) / span if tokens > 1 and span > 0 else 0.0
    return Timings(**asdict(timings))


def chat_messages(prompt: str, system: str | None = None) -> list[dict]:
    """A one-turn chat as Runtime.generate sends it locally (lab.inference.generate.prompt_ids)."""
    return [*([{"role": "system", "content": system}] if system else []), {"role": "user", "content": prompt}]


def stream_model(settings: LabSettings, model_id: str, messages: list[dict], gen: GenerationSettings,
                 user: str | None = None, adapter: str | None = None) -> Iterator[GenerationEvent]:
    """Stream from the endpoint `model_id` names; `adapter` asks the server for that served name instead
    (a LoRA loaded on vLLM under the adapter's name)."""
    endpoint = resolve(settings, model_id)
    yield from stream_chat(endpoint, messages, gen, user=user, model=adapter)
