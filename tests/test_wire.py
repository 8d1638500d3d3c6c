"""The wire encodings round-trip QueryMT's golden serde output byte for byte (spec checklist 11, 23-25)."""

from __future__ import annotations

import json

import pytest

from querymt_jupyter import wire

HTTP_GOLDENS = [
    "serializable_http_request",
    "serializable_http_request_get_empty_body",
]
RESPONSE_GOLDENS = [
    "serializable_http_response_multi_header_http2",
    "serializable_http_response_blocked_403",
    "serializable_http_response_cancelled_499",
]


@pytest.mark.parametrize("name", HTTP_GOLDENS)
def test_http_request_round_trips(golden, name):
    text = golden[name]["wire"]
    assert wire.HttpRequest.from_wire(text.encode()).to_wire().decode() == text


@pytest.mark.parametrize("name", RESPONSE_GOLDENS)
def test_http_response_round_trips(golden, name):
    text = golden[name]["wire"]
    assert wire.HttpResponse.from_wire(text.encode()).to_wire().decode() == text


def test_repeated_headers_are_arrays(golden):
    response = wire.HttpResponse.from_wire(golden["serializable_http_response_multi_header_http2"]["wire"])
    assert [v for k, v in response.headers if k == "set-cookie"] == ["a=1", "b=2"]
    assert response.version == "HTTP/2.0"


@pytest.mark.parametrize(
    "bad",
    [
        '{"resp":{"head":{"status":200,"headers":{},"version":"HTTP/1.1"},"body":"e30="}}',  # base64 body
        '{"resp":{"head":{"status":200,"headers":{}},"body":[]}}',  # missing version
        '{"resp":{"head":{"status":200,"headers":{},"version":"http/1.1"},"body":[]}}',  # lowercase version
        '{"resp":{"head":{"status":200,"headers":{"a":[]},"version":"HTTP/1.1"},"body":[]}}',  # empty header
        '{"resp":{"head":{"status":"200","headers":{},"version":"HTTP/1.1"},"body":[]}}',  # string status
    ],
)
def test_malformed_http_responses_are_rejected(bad):
    with pytest.raises((ValueError, KeyError)):
        wire.HttpResponse.from_wire(bad)


@pytest.mark.parametrize(
    "name",
    [
        "chat_message_user_text",
        "chat_message_user_text_and_image",
        "chat_message_assistant_tool_use",
        "chat_message_user_tool_result",
        "chat_message_assistant_thinking_with_cache_hint",
    ],
)
def test_wire_form_messages_pass_through_unchanged(golden, name):
    message = json.loads(golden[name]["wire"])
    _, converted = wire.split_messages([message])
    assert wire.dumps(converted[0]).decode() == golden[name]["wire"]


def test_openai_style_messages_become_wire_form(golden):
    system, messages = wire.split_messages(
        [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "Hello"},
            {
                "role": "assistant",
                "content": "Let me search",
                "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "search", "arguments": '{"q":"rust"}'}}],
            },
            {"role": "tool", "tool_call_id": "t1", "name": "search", "content": "found it"},
        ]
    )
    assert system == ["be brief"]
    assert wire.dumps(messages[0]).decode() == golden["chat_message_user_text"]["wire"]
    assert wire.dumps(messages[1]).decode() == golden["chat_message_assistant_tool_use"]["wire"]
    assert wire.dumps(messages[2]).decode() == golden["chat_message_user_tool_result"]["wire"]


def test_chat_message_objects_encode_like_dicts(golden):
    _, messages = wire.split_messages([wire.ChatMessage.user("Hello")])
    assert wire.dumps(messages[0]).decode() == golden["chat_message_user_text"]["wire"]


def test_unknown_role_is_a_clear_error():
    with pytest.raises(ValueError, match=r"messages\[0\].*unknown role 'robot'"):
        wire.split_messages([{"role": "robot", "content": "hi"}])


def test_chat_request_encodes_like_serde(golden):
    g = json.loads(golden["extism_chat_request"]["wire"])
    request = wire.chat_request(wire.dumps(g["cfg"]), g["messages"], g["tools"])
    assert request.decode() == golden["extism_chat_request"]["wire"]
    g = json.loads(golden["extism_chat_request_no_tools"]["wire"])
    assert wire.chat_request(wire.dumps(g["cfg"]), g["messages"], None).decode() == golden["extism_chat_request_no_tools"]["wire"]


def test_embed_complete_and_parse_requests_encode_like_serde(golden):
    g = json.loads(golden["extism_embed_request"]["wire"])
    assert wire.embed_request(wire.dumps(g["cfg"]), g["inputs"]).decode() == golden["extism_embed_request"]["wire"]
    g = json.loads(golden["extism_complete_request"]["wire"])
    req = g["req"]
    encoded = wire.complete_request(wire.dumps(g["cfg"]), req["prompt"], req["suffix"], req["max_tokens"], req["temperature"])
    assert encoded.decode() == golden["extism_complete_request"]["wire"]
    g = json.loads(golden["extism_chat_parse_request"]["wire"])
    encoded = wire.parse_request(wire.dumps(g["cfg"]), wire.dumps(g["resp"]))
    assert encoded.decode() == golden["extism_chat_parse_request"]["wire"]
    g = json.loads(golden["extism_list_models_parse_request"]["wire"])
    assert wire.parse_request(None, wire.dumps(g["resp"])).decode() == golden["extism_list_models_parse_request"]["wire"]


def test_chat_response_decodes(golden):
    response = wire.ChatResponse.from_wire(golden["extism_chat_response_with_usage"]["wire"].encode())
    assert response.text == "Hello!"
    assert response.usage == wire.Usage(10, 20, 7, 5, 3)
    assert response.finish_reason == "Stop"
    tools = wire.ChatResponse.from_wire(golden["extism_chat_response_tool_calls"]["wire"].encode())
    assert tools.text is None and tools.tool_calls[0]["function"]["arguments"] == '{"path":"a.txt"}'


def test_usage_accepts_openai_aliases_and_missing_fields():
    assert wire.Usage.from_wire({"prompt_tokens": 3, "completion_tokens": 4}) == wire.Usage(3, 4)
    assert wire.Usage.from_wire({}) == wire.Usage()


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("extism_chat_chunk_text", "text"),
        ("extism_chat_chunk_thinking", "thinking"),
        ("extism_chat_chunk_tool_use_start", "tool_use_start"),
        ("extism_chat_chunk_tool_use_complete", "tool_use_complete"),
        ("extism_chat_chunk_usage", "usage"),
        ("extism_chat_chunk_done", "done"),
    ],
)
def test_stream_chunks_decode(golden, name, kind):
    chunk = wire.StreamChunk.from_chat_chunk(json.loads(golden[name]["wire"]))
    assert chunk.kind == kind
    assert (chunk.text != "") == (kind == "text")
