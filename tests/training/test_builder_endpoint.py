"""The Q&A builder's endpoint path through the openai client: each way a server can fail is one clear ValueError
that names the endpoint (a real local HTTP server answers; nothing is mocked)."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from lab.training.data.builder import BuilderConfig, endpoint_generator

PAIR = {"question": "How many layers does it have?", "answer": "30"}


@pytest.fixture
def server():
    """A local server whose answer to POST /v1/chat/completions the test sets: (status, body bytes, delay s)."""
    answer = {"reply": (200, b"{}", 0.0)}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            status, body, delay = answer["reply"]
            time.sleep(delay)
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except BrokenPipeError:  # the client gave up waiting (the timeout test)
                pass

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}/v1", answer
    httpd.shutdown()


def generator(url: str, timeout_s: float = 10.0):
    return endpoint_generator(BuilderConfig(base_url=url, endpoint_model="m", api_key_env="LAB_NO_SUCH_KEY"),
                              timeout_s=timeout_s)


def completion(content: str, finish: str = "stop") -> bytes:
    return json.dumps({"id": "c1", "object": "chat.completion", "created": 0, "model": "m",
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                    "finish_reason": finish}],
                       "usage": {"prompt_tokens": 5, "completion_tokens": 12, "total_tokens": 17}}).encode()


def test_a_completion_becomes_an_attempt(server):
    url, answer = server
    answer["reply"] = (200, completion(json.dumps({"pairs": [PAIR]}), "length"), 0.0)
    attempt = generator(url)("chunk", 1, 0.0, 0)
    assert json.loads(attempt.text) == {"pairs": [PAIR]}
    assert (attempt.new_tokens, attempt.finish_reason) == (12, "length")


@pytest.mark.parametrize("status, body, message", [
    (500, b'{"error": {"message": "model crashed"}}', r"answered HTTP 500: model crashed"),
    (404, b'{"detail": "Not Found"}', r"answered HTTP 404: Not Found"),
    (200, b"this is not json", r"did not answer with a chat completion"),
    (200, b'{"choices": []}', r"did not answer with a chat completion"),
])
def test_http_errors_and_bad_replies_name_the_endpoint(server, status, body, message):
    url, answer = server
    answer["reply"] = (status, body, 0.0)
    with pytest.raises(ValueError, match=f"^endpoint {url}/chat/completions {message}"):
        generator(url)("chunk", 1, 0.0, 0)


def test_a_slow_server_times_out_and_a_closed_port_is_unreachable(server):
    url, answer = server
    answer["reply"] = (200, completion("{}"), 2.0)
    with pytest.raises(ValueError, match=r"did not answer within 0.5 s"):
        generator(url, timeout_s=0.5)("chunk", 1, 0.0, 0)
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ValueError, match=rf"^endpoint http://127.0.0.1:{port}/v1/chat/completions is unreachable"):
        generator(f"http://127.0.0.1:{port}/v1")("chunk", 1, 0.0, 0)
