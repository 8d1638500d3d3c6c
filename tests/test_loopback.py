"""The loopback OpenAI server speaks the OpenAI REST API: shapes, SSE timing, errors, recording."""

from __future__ import annotations

import base64
import json
import math
import socket
import struct
import time
from collections.abc import Iterator

import httpx
import pytest

from querymt_jupyter.loopback import DEFAULT_MODELS, Failure, LoopbackOpenAI, embedding_vector, split_text

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}]}


@pytest.fixture
def server() -> Iterator[LoopbackOpenAI]:
    with LoopbackOpenAI(reply="Hello from the test!") as s:
        yield s


def sse_events(response: httpx.Response) -> list[tuple[float, str]]:
    """(arrival time, data) of each SSE event of a streamed response."""
    events = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            events.append((time.monotonic(), line[len("data: "):]))
        else:
            assert line == "", f"unexpected SSE line {line!r}"
    return events


def stream_chat(server: LoopbackOpenAI, body: dict) -> tuple[httpx.Response, list[tuple[float, str]]]:
    with httpx.stream("POST", f"{server.base_url}/chat/completions", json={**body, "stream": True}) as response:
        return response, sse_events(response)


# ---- shapes ------------------------------------------------------------------------------------------


def test_base_url_and_models(server: LoopbackOpenAI) -> None:
    assert server.base_url == f"http://127.0.0.1:{server.port}/v1"
    listing = httpx.get(f"{server.base_url}/models").json()
    assert listing["object"] == "list"
    assert [m["id"] for m in listing["data"]] == list(DEFAULT_MODELS)
    assert all(m["object"] == "model" and isinstance(m["created"], int) and m["owned_by"] for m in listing["data"])
    assert httpx.get(f"{server.base_url}/models/gpt-4o").json()["id"] == "gpt-4o"
    missing = httpx.get(f"{server.base_url}/models/gpt-9")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"


def test_chat_completion_shape(server: LoopbackOpenAI) -> None:
    response = httpx.post(f"{server.base_url}/chat/completions", json=CHAT)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-request-id"]
    doc = response.json()
    assert doc["object"] == "chat.completion" and doc["id"].startswith("chatcmpl-")
    assert doc["model"] == "gpt-4o-mini" and isinstance(doc["created"], int)
    (choice,) = doc["choices"]
    assert choice["index"] == 0 and choice["finish_reason"] == "stop"
    assert choice["message"] == {"role": "assistant", "content": "Hello from the test!", "refusal": None,
                                 "annotations": []}
    usage = doc["usage"]
    assert usage["prompt_tokens"] == 2 and usage["completion_tokens"] == 5
    assert usage["total_tokens"] == 7
    assert usage["prompt_tokens_details"]["cached_tokens"] == 0
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 0


def test_chat_tool_calls_and_callable_reply() -> None:
    seen = []

    def reply(request: dict) -> str | None:
        seen.append(request)
        return None

    calls = [{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "call_1"},
             {"name": "noop", "arguments": "{}"}]
    with LoopbackOpenAI(reply, tool_calls=calls, usage={"prompt_tokens": 11, "completion_tokens": 3}) as s:
        doc = httpx.post(f"{s.base_url}/chat/completions", json=CHAT).json()
    assert seen == [CHAT]
    choice = doc["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    first, second = choice["message"]["tool_calls"]
    assert first == {"id": "call_1", "type": "function",
                     "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}
    assert second["id"].startswith("call_") and second["function"]["arguments"] == "{}"
    assert doc["usage"]["prompt_tokens"] == 11 and doc["usage"]["total_tokens"] == 14


def test_tool_calls_default_to_null_content_and_finish_reason_override() -> None:
    with LoopbackOpenAI(tool_calls=lambda request: None, finish_reason="length") as s:
        choice = httpx.post(f"{s.base_url}/chat/completions", json=CHAT).json()["choices"][0]
    assert choice["message"]["content"] is None and "tool_calls" not in choice["message"]
    assert choice["finish_reason"] == "length"


def test_completions_shape(server: LoopbackOpenAI) -> None:
    doc = httpx.post(f"{server.base_url}/completions",
                     json={"model": "gpt-3.5-turbo-instruct", "prompt": "Say hi"}).json()
    assert doc["object"] == "text_completion" and doc["id"].startswith("cmpl-")
    assert doc["choices"] == [{"text": "Hello from the test!", "index": 0, "logprobs": None, "finish_reason": "stop"}]
    assert set(doc["usage"]) == {"prompt_tokens", "completion_tokens", "total_tokens"}


def test_embeddings_shape_determinism_and_dimensions(server: LoopbackOpenAI) -> None:
    body = {"model": "text-embedding-3-small", "input": ["hello", "world"]}
    doc = httpx.post(f"{server.base_url}/embeddings", json=body).json()
    assert doc["object"] == "list" and doc["model"] == "text-embedding-3-small"
    assert [(d["object"], d["index"]) for d in doc["data"]] == [("embedding", 0), ("embedding", 1)]
    hello, world = (d["embedding"] for d in doc["data"])
    assert len(hello) == 1536 and hello != world
    assert math.isclose(math.fsum(x * x for x in hello), 1.0, rel_tol=1e-5)
    assert hello == embedding_vector("hello", 1536)
    assert doc["usage"] == {"prompt_tokens": 2, "total_tokens": 2}

    again = httpx.post(f"{server.base_url}/embeddings", json={**body, "input": "hello", "dimensions": 8}).json()
    short = again["data"][0]["embedding"]
    assert len(short) == 8 and short == embedding_vector("hello", 8)
    large = httpx.post(f"{server.base_url}/embeddings", json={"model": "text-embedding-3-large", "input": "x"})
    assert len(large.json()["data"][0]["embedding"]) == 3072


def test_embeddings_base64_matches_floats(server: LoopbackOpenAI) -> None:
    body = {"model": "text-embedding-3-small", "input": "hello", "dimensions": 16, "encoding_format": "base64"}
    encoded = httpx.post(f"{server.base_url}/embeddings", json=body).json()["data"][0]["embedding"]
    assert list(struct.unpack("<16f", base64.b64decode(encoded))) == embedding_vector("hello", 16)


def test_embeddings_reject_bad_input(server: LoopbackOpenAI) -> None:
    for body in ({"model": "m", "input": []}, {"model": "m", "input": "x", "dimensions": 0}, {"model": "m"}):
        response = httpx.post(f"{server.base_url}/embeddings", json=body)
        assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"


# ---- streaming --------------------------------------------------------------------------------------


def test_stream_events_arrive_over_time_in_order() -> None:
    reply = "The quick brown fox jumps over the lazy dog."
    with LoopbackOpenAI(reply=reply, chunk_delay=0.05) as s:
        started = time.monotonic()
        response, events = stream_chat(s, {**CHAT, "stream_options": {"include_usage": True}})
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["transfer-encoding"] == "chunked"
    # role, 8 content pieces, finish, usage, [DONE]
    assert len(events) == 12 and events[-1][1] == "[DONE]"
    times = [t for t, _ in events]
    assert times[1] - started < 0.5 * (times[-1] - started), "events must not arrive all at once at the end"
    assert times[-1] - times[0] >= 11 * 0.05 * 0.8
    chunks = [json.loads(data) for _, data in events[:-1]]
    assert {c["id"] for c in chunks} == {chunks[0]["id"]}
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    pieces = [c["choices"][0]["delta"]["content"] for c in chunks[1:9]]
    assert len(pieces) == 8 and "".join(pieces) == reply
    assert chunks[9]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    assert all(c["usage"] is None for c in chunks[:10])
    assert chunks[10]["choices"] == [] and chunks[10]["usage"]["total_tokens"] > 0


def test_stream_without_include_usage_has_no_usage(server: LoopbackOpenAI) -> None:
    _, events = stream_chat(server, CHAT)
    chunks = [json.loads(data) for _, data in events[:-1]]
    assert len(events) == 1 + 8 + 1 + 1
    assert all("usage" not in c and c["choices"] for c in chunks)


def test_stream_tool_call_deltas() -> None:
    calls = [{"id": "call_a", "name": "read_file", "arguments": {"path": "a.txt"}}]
    with LoopbackOpenAI(tool_calls=calls, chunks=4) as s:
        _, events = stream_chat(s, CHAT)
    chunks = [json.loads(data) for _, data in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["content"] is None
    deltas = [c["choices"][0]["delta"]["tool_calls"][0] for c in chunks[1:-1]]
    assert deltas[0] == {"index": 0, "id": "call_a", "type": "function",
                         "function": {"name": "read_file", "arguments": ""}}
    assert all(set(d) == {"index", "function"} for d in deltas[1:]) and len(deltas) == 5
    assert "".join(d["function"]["arguments"] for d in deltas) == '{"path":"a.txt"}'
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_completions_stream(server: LoopbackOpenAI) -> None:
    body = {"model": "m", "prompt": "x", "stream": True}
    with httpx.stream("POST", f"{server.base_url}/completions", json=body) as response:
        events = sse_events(response)
    chunks = [json.loads(data) for _, data in events[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks) == "Hello from the test!"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and events[-1][1] == "[DONE]"


def test_split_text() -> None:
    assert split_text("abcdefgh", 3) == ["abc", "de", "fgh"]
    assert split_text("ab", 8) == ["a", "b"]
    assert split_text("", 8) == []


# ---- errors ------------------------------------------------------------------------------------------


def test_api_key_required() -> None:
    with LoopbackOpenAI(api_key="sk-test-123456") as s:
        missing = httpx.post(f"{s.base_url}/chat/completions", json=CHAT)
        wrong = httpx.post(f"{s.base_url}/chat/completions", json=CHAT,
                           headers={"Authorization": "Bearer sk-wrong-987654"})
        right = httpx.post(f"{s.base_url}/chat/completions", json=CHAT,
                           headers={"Authorization": "Bearer sk-test-123456"})
    assert missing.status_code == 401
    assert missing.json()["error"]["message"].startswith("You didn't provide an API key")
    assert missing.json()["error"]["type"] == "invalid_request_error"
    assert wrong.status_code == 401
    assert wrong.json()["error"] == {"message": "Incorrect API key provided: sk-wr***7654.",
                                     "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}
    assert "sk-wrong-987654" not in wrong.text
    assert right.status_code == 200


def test_scripted_rate_limit_then_success(server: LoopbackOpenAI) -> None:
    server.fail_next(429)
    limited = httpx.post(f"{server.base_url}/chat/completions", json=CHAT)
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "30"
    assert limited.headers["x-ratelimit-remaining-requests"] == "0"
    error = limited.json()["error"]
    assert error["code"] == "rate_limit_exceeded" and error["type"] == "requests"
    assert "Rate limit reached for gpt-4o-mini" in error["message"] and error["param"] is None
    assert httpx.post(f"{server.base_url}/chat/completions", json=CHAT).status_code == 200


def test_scripted_failures_in_order() -> None:
    failures = [Failure(500), Failure(400, message="bad things"), Failure(429, retry_after=2), 503]
    with LoopbackOpenAI(failures=failures) as s:
        responses = [httpx.post(f"{s.base_url}/embeddings", json={"model": "m", "input": "x"}) for _ in range(5)]
    assert [r.status_code for r in responses] == [500, 400, 429, 503, 200]
    assert responses[0].json()["error"]["type"] == "server_error"
    assert "retry-after" not in responses[0].headers
    assert responses[1].json()["error"]["message"] == "bad things"
    assert responses[2].headers["retry-after"] == "2"
    assert "overloaded" in responses[3].json()["error"]["message"]


def test_scripted_failure_with_raw_body(server: LoopbackOpenAI) -> None:
    server.fail_next(502, body=b"<html>Bad gateway</html>")
    response = httpx.get(f"{server.base_url}/models")
    assert response.status_code == 502 and response.text == "<html>Bad gateway</html>"


def test_scripted_failure_applies_to_streams_as_json(server: LoopbackOpenAI) -> None:
    server.fail_next(500, times=2)
    for _ in range(2):
        with httpx.stream("POST", f"{server.base_url}/chat/completions", json={**CHAT, "stream": True}) as r:
            r.read()
        assert r.status_code == 500 and r.headers["content-type"] == "application/json"
        assert r.json()["error"]["type"] == "server_error"


def test_unknown_path_and_malformed_json(server: LoopbackOpenAI) -> None:
    unknown = httpx.post(f"{server.base_url}/chat/completion", json=CHAT)
    assert unknown.status_code == 404
    assert unknown.json()["error"]["message"] == "Invalid URL (POST /v1/chat/completion)"
    assert httpx.get(f"{server.base_url}/chat/completions").status_code == 404
    malformed = httpx.post(f"{server.base_url}/chat/completions", content=b"{not json",
                           headers={"content-type": "application/json"})
    assert malformed.status_code == 400
    assert malformed.json()["error"]["type"] == "invalid_request_error"
    no_messages = httpx.post(f"{server.base_url}/chat/completions", json={"model": "m"})
    assert no_messages.status_code == 400 and no_messages.json()["error"]["param"] == "messages"


def test_failing_reply_callable_is_reported_as_500() -> None:
    def reply(request: dict) -> str:
        raise RuntimeError("boom")

    with LoopbackOpenAI(reply) as s:
        response = httpx.post(f"{s.base_url}/chat/completions", json=CHAT)
    assert response.status_code == 500 and "boom" in response.json()["error"]["message"]


# ---- recording and lifecycle ---------------------------------------------------------------------------


def test_requests_are_recorded(server: LoopbackOpenAI) -> None:
    httpx.post(f"{server.base_url}/chat/completions?x=1", json=CHAT, headers={"X-Custom": "A"})
    httpx.post(f"{server.base_url}/embeddings", content=b"\xff not json")
    first, second = server.requests
    assert (first.method, first.path) == ("POST", "/v1/chat/completions?x=1")
    assert first.headers["x-custom"] == "A" and first.headers["content-type"] == "application/json"
    assert all(name == name.lower() for name in first.headers)
    assert first.json == CHAT and json.loads(first.body) == CHAT
    assert second.body == b"\xff not json" and second.json is None
    server.clear_requests()
    assert server.requests == []


def test_chunked_request_body(server: LoopbackOpenAI) -> None:
    parts = [b'{"model":"m","messages":', b'[{"role":"user","content":"hi"}]}']
    response = httpx.post(f"{server.base_url}/chat/completions", content=iter(parts))
    assert response.status_code == 200
    assert server.requests[-1].headers["transfer-encoding"] == "chunked"
    assert server.requests[-1].json["messages"][0]["content"] == "hi"


def test_keep_alive_and_stop() -> None:
    server = LoopbackOpenAI()
    with httpx.Client() as client:
        for _ in range(3):
            assert client.get(f"{server.base_url}/models").status_code == 200
        server.stop()
        server.stop()  # idempotent
        with pytest.raises(httpx.TransportError):
            client.get(f"{server.base_url}/models")
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
