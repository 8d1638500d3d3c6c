"""QueryMT's wire types and their JSON encoding (wire spec section 7).

Everything that crosses a plugin boundary is compact JSON shaped exactly as QueryMT's serde types
produce it: PascalCase roles, type-tagged content blocks, byte vectors as arrays of integers, and HTTP
requests/responses as ``{"req"|"resp": {"head": ..., "body": [..]}}``. This module turns the friendly
Python forms (OpenAI-style message dicts, ``ChatMessage`` objects) into those bytes and decodes the
plugins' answers into small dataclasses. It knows nothing of plugins or HTTP clients.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

Json = Any

_ROLES = {"user": "User", "assistant": "Assistant"}
_HTTP_VERSIONS = ("HTTP/0.9", "HTTP/1.0", "HTTP/1.1", "HTTP/2.0", "HTTP/3.0")


def dumps(value: Json) -> bytes:
    """Compact JSON as serde_json writes it (no spaces, UTF-8, key order kept)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def loads(data: bytes | str) -> Json:
    return json.loads(data)


# ---- chat messages -------------------------------------------------------------------------------


@dataclass
class ChatMessage:
    """A QueryMT ``ChatMessage``: ``role`` is "User" or "Assistant"; ``content`` typed blocks."""

    role: str
    content: list[dict[str, Json]]
    cache: dict[str, Json] | None = None

    @classmethod
    def user(cls, text: str) -> ChatMessage:
        return cls("User", [{"type": "text", "text": text}])

    @classmethod
    def assistant(cls, text: str) -> ChatMessage:
        return cls("Assistant", [{"type": "text", "text": text}])

    @property
    def text(self) -> str:
        return "".join(block.get("text", "") for block in self.content if block.get("type") == "text")

    def to_wire(self) -> dict[str, Json]:
        message: dict[str, Json] = {"role": self.role, "content": self.content}
        if self.cache is not None:
            message["cache"] = self.cache
        return message


MessageLike = ChatMessage | Mapping[str, Json]


def split_messages(messages: Iterable[MessageLike]) -> tuple[list[str], list[dict[str, Json]]]:
    """Convert messages to wire form; system messages are returned apart (they travel in cfg.system).

    Accepted: ``ChatMessage``; OpenAI-style dicts (roles user/assistant/system/tool, string or
    part-list content, assistant ``tool_calls``); dicts already in wire form (PascalCase role).
    """
    system: list[str] = []
    wire: list[dict[str, Json]] = []
    for index, message in enumerate(messages):
        if isinstance(message, ChatMessage):
            wire.append(message.to_wire())
            continue
        role = message.get("role")
        if role == "system":
            system.append(_plain_text(message.get("content"), index))
        elif role in ("User", "Assistant"):
            wire.append(dict(message))
        elif role == "tool":
            wire.append({"role": "User", "content": [_tool_result(message, index)]})
        elif role in _ROLES:
            content = _content_blocks(message.get("content"), index)
            content += [_tool_use(call) for call in message.get("tool_calls") or ()]
            wire.append({"role": _ROLES[role], "content": content})
        else:
            raise ValueError(
                f"messages[{index}]: unknown role {role!r}; use 'user', 'assistant', 'system' or 'tool'"
            )
    return system, wire


def _plain_text(content: Json, index: int) -> str:
    if isinstance(content, str):
        return content
    blocks = _content_blocks(content, index)
    return "".join(block.get("text", "") for block in blocks)


def _content_blocks(content: Json, index: int) -> list[dict[str, Json]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise ValueError(f"messages[{index}].content must be a string or a list of parts")
    return [_content_part(part, index) for part in content]


def _content_part(part: Json, index: int) -> dict[str, Json]:
    kind = part.get("type") if isinstance(part, Mapping) else None
    if kind == "text":
        return {"type": "text", "text": part["text"]}
    if kind == "image_url":  # OpenAI nests the URL one level down
        url = part["image_url"]["url"] if isinstance(part["image_url"], Mapping) else part["image_url"]
        return {"type": "image_url", "url": url}
    if kind in ("image", "pdf", "audio", "thinking", "tool_use", "tool_result", "resource_link"):
        return dict(part)  # already a QueryMT block
    raise ValueError(f"messages[{index}]: unsupported content part {part!r}")


def _tool_use(call: Mapping[str, Json]) -> dict[str, Json]:
    function = call["function"]
    arguments = function.get("arguments") or "{}"
    return {
        "type": "tool_use",
        "id": call["id"],
        "name": function["name"],
        "arguments": json.loads(arguments) if isinstance(arguments, str) else arguments,
    }


def _tool_result(message: Mapping[str, Json], index: int) -> dict[str, Json]:
    block: dict[str, Json] = {"type": "tool_result", "id": message.get("tool_call_id", "")}
    if message.get("name"):
        block["name"] = message["name"]
    block["is_error"] = bool(message.get("is_error", False))
    block["content"] = _content_blocks(message.get("content"), index)
    return block


# ---- requests ------------------------------------------------------------------------------------


def chat_request(cfg_json: bytes, messages: list[dict[str, Json]], tools: list[Json] | None) -> bytes:
    """``ExtismChatRequest``; ``cfg_json`` is pre-encoded once per provider (it rarely changes)."""
    tools_json = dumps(tools) if tools else b"null"
    return b'{"cfg":' + cfg_json + b',"messages":' + dumps(messages) + b',"tools":' + tools_json + b"}"


def embed_request(cfg_json: bytes, inputs: list[str]) -> bytes:
    return b'{"cfg":' + cfg_json + b',"inputs":' + dumps(inputs) + b"}"


def complete_request(
    cfg_json: bytes, prompt: str, suffix: str | None, max_tokens: int | None, temperature: float | None
) -> bytes:
    req = {"prompt": prompt, "suffix": suffix, "max_tokens": max_tokens, "temperature": temperature}
    return b'{"cfg":' + cfg_json + b',"req":' + dumps(req) + b"}"


def parse_request(cfg_json: bytes | None, response: bytes) -> bytes:
    """``{"cfg":..,"resp":<SerializableHttpResponse>}`` (no cfg for list-models parsing)."""
    head = b"" if cfg_json is None else b'"cfg":' + cfg_json + b","
    return b"{" + head + b'"resp":' + response + b"}"


# ---- responses -----------------------------------------------------------------------------------


_USAGE_ALIASES = {  # names other providers use, accepted on input as serde does
    "prompt_tokens": "input_tokens",
    "prompt_eval_count": "input_tokens",
    "promptTokenCount": "input_tokens",
    "completion_tokens": "output_tokens",
    "eval_count": "output_tokens",
    "candidatesTokenCount": "output_tokens",
    "cache_read_input_tokens": "cache_read",
    "cache_creation_input_tokens": "cache_write",
}


@dataclass
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cache_read: int = 0
    cache_write: int = 0

    @classmethod
    def from_wire(cls, value: Json) -> Usage | None:
        if not isinstance(value, Mapping):
            return None
        fields = {_USAGE_ALIASES.get(key, key): v for key, v in value.items()}
        return cls(**{name: int(fields.get(name) or 0) for name in cls.__dataclass_fields__})

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass
class ChatResponse:
    """``ExtismChatResponse``; ``raw`` is the decoded JSON as the plugin sent it."""

    text: str | None
    tool_calls: list[dict[str, Json]] | None = None
    thinking: str | None = None
    usage: Usage | None = None
    finish_reason: str | None = None
    raw: dict[str, Json] = field(default_factory=dict, repr=False)

    @classmethod
    def from_wire(cls, data: bytes) -> ChatResponse:
        doc = loads(data)
        return cls(
            text=doc.get("text"),
            tool_calls=doc.get("tool_calls"),
            thinking=doc.get("thinking"),
            usage=Usage.from_wire(doc.get("usage")),
            finish_reason=doc.get("finish_reason"),
            raw=doc,
        )


@dataclass
class StreamChunk:
    """One ``StreamChunk`` (externally tagged): ``kind`` is its tag, ``value`` its payload."""

    kind: str
    value: Json

    @property
    def text(self) -> str:
        """The text delta ("" for chunks that carry no text)."""
        return self.value if self.kind == "text" else ""

    @classmethod
    def from_chat_chunk(cls, chunk: Mapping[str, Json]) -> StreamChunk:
        """Decode an ``ExtismChatChunk`` ``{"chunk": {tag: value}, "usage": ..}``."""
        ((kind, value),) = chunk["chunk"].items()
        if kind == "usage":
            value = Usage.from_wire(value)
        return cls(kind, value)


@dataclass
class CompletionResponse:
    text: str


# ---- HTTP (section 7.7) --------------------------------------------------------------------------


@dataclass
class HttpRequest:
    method: str
    uri: str
    headers: list[tuple[str, str]]
    body: bytes
    version: str = "HTTP/1.1"

    @classmethod
    def from_wire(cls, data: bytes | Mapping[str, Json]) -> HttpRequest:
        doc = loads(data) if isinstance(data, (bytes, str)) else data
        head, body = _head_and_body(doc["req"])
        version = head["version"]
        if version not in _HTTP_VERSIONS:
            raise ValueError(f"unknown HTTP version {version!r}")
        return cls(head["method"], head["uri"], _decode_headers(head["headers"]), bytes(body), version)

    def to_wire(self) -> bytes:
        head = {"method": self.method, "uri": self.uri, "headers": _encode_headers(self.headers), "version": self.version}
        return _encode_message("req", head, self.body)


@dataclass
class HttpResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    version: str = "HTTP/1.1"

    @classmethod
    def from_wire(cls, data: bytes | Mapping[str, Json]) -> HttpResponse:
        doc = loads(data) if isinstance(data, (bytes, str)) else data
        head, body = _head_and_body(doc["resp"])
        if not isinstance(head["status"], int):
            raise ValueError("HTTP status must be an integer")
        if head["version"] not in _HTTP_VERSIONS:
            raise ValueError(f"unknown HTTP version {head['version']!r}")
        return cls(head["status"], _decode_headers(head["headers"]), bytes(body), head["version"])

    def to_wire(self) -> bytes:
        head = {"status": self.status, "headers": _encode_headers(self.headers), "version": self.version}
        return _encode_message("resp", head, self.body)

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((value for key, value in self.headers if key == name), None)


def _head_and_body(value: Json) -> tuple[Mapping[str, Json], list[int]]:
    head, body = (value["head"], value["body"]) if isinstance(value, Mapping) else value
    if not isinstance(body, list):
        raise ValueError("HTTP body must be an array of byte values")
    return head, body


def byte_array(data: bytes) -> bytes:
    """Bytes as serde encodes ``Vec<u8>``: a JSON array of integers."""
    return ("[" + ",".join(map(str, data)) + "]").encode()


def _encode_message(key: str, head: dict[str, Json], body: bytes) -> bytes:
    return b'{"' + key.encode() + b'":{"head":' + dumps(head) + b',"body":' + byte_array(body) + b"}}"


def _encode_headers(headers: Iterable[tuple[str, str]]) -> dict[str, Json]:
    encoded: dict[str, Json] = {}
    for name, value in headers:
        name = name.lower()
        if name not in encoded:
            encoded[name] = value
        elif isinstance(encoded[name], list):
            encoded[name].append(value)
        else:
            encoded[name] = [encoded[name], value]
    return encoded


def _decode_headers(headers: Mapping[str, Json]) -> list[tuple[str, str]]:
    decoded: list[tuple[str, str]] = []
    for name, value in headers.items():
        values = value if isinstance(value, list) else [value]
        if not values:
            raise ValueError(f"header {name!r} has no value")
        decoded += [(name.lower(), str(v)) for v in values]
    return decoded
