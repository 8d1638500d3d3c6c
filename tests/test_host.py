"""Host-side rules that need no plugin: allow-list (spec 9), status classifiers (5.4), pruning (3)."""

from __future__ import annotations

import pytest

from querymt_jupyter import HostBlockedError, wire
from querymt_jupyter.factory import prune
from querymt_jupyter.host import AllowList, classify_chat_status, classify_http_status, iter_lines


@pytest.mark.parametrize(
    ("config", "plugin_default", "expected"),
    [  # the three unit-test vectors of QueryMT's build_allowed_hosts
        ({"base_url": "https://token-plan-sgp.xiaomimimo.com/v1"}, "https://api.openai.com/v1", ("token-plan-sgp.xiaomimimo.com",)),
        ({}, "https://api.openai.com/v1", ("api.openai.com",)),
        (
            {"allowed_hosts": ["foo.example.com"], "base_url": "https://token-plan-sgp.xiaomimimo.com/v1"},
            "https://api.openai.com/v1",
            ("foo.example.com", "token-plan-sgp.xiaomimimo.com"),
        ),
        ({"allowed_hosts": ["a", "", "a", "b"]}, None, ("a", "b")),
        ({}, None, ()),
    ],
)
def test_allowed_hosts_are_computed_as_queryMT_does(config, plugin_default, expected):
    assert AllowList.compute(config, plugin_default).hosts == expected


def test_matching_is_exact_and_ignores_ports():
    allow = AllowList(("api.example.com", "127.0.0.1"))
    assert allow.permits("https://api.example.com:8443/v1/chat")
    assert allow.permits("http://127.0.0.1:9/x")
    assert not allow.permits("https://evil.api.example.com/")
    assert not allow.permits("https://localhost/")
    with pytest.raises(HostBlockedError) as info:
        allow.check("https://evil.example/x", "p")
    assert info.value.host == "evil.example" and "allowed_hosts" in info.value.hint


def test_an_empty_allow_list_allows_everything():
    assert AllowList().permits("https://anything.example/")


def response(status: int, body: bytes = b"", headers: list[tuple[str, str]] | None = None) -> wire.HttpResponse:
    return wire.HttpResponse(status, headers or [], body)


def test_generic_classifier_maps_statuses():
    body = b'{"error":{"message":"Rate limit reached","type":"requests"}}'
    assert classify_http_status(response(429, body, [("retry-after", "30")])) == {
        "type": "rate_limited",
        "message": "Rate limit reached",
        "retry_after_secs": 30,
    }
    assert classify_http_status(response(401, b"nope"))["type"] == "auth_error"
    assert classify_http_status(response(400))["message"] == "HTTP 400"
    assert classify_http_status(response(503, b" down "))["message"] == "down"
    assert classify_http_status(response(503))["type"] == "http_status"
    assert classify_http_status(response(499)) == {"type": "cancelled"}
    assert classify_http_status(response(404)) == {"type": "provider_error", "message": "HTTP 404"}


@pytest.mark.parametrize(
    ("headers", "body", "expected"),
    [
        ([("retry-after-ms", "250")], b"", 1),  # sub-second rounds up to 1
        ([("x-ratelimit-reset-requests", "1m30s")], b"", 90),
        ([], b'{"error":{"retry_after":7}}', 7),
        ([], b'{"retry_after_secs":3}', 3),
        ([("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")], b"", 1),  # a date in the past
        ([], b"", None),
    ],
)
def test_retry_after_sources(headers, body, expected):
    assert classify_http_status(response(429, body, headers))["retry_after_secs"] == expected


def test_default_chat_classifier_uses_provider_error_kinds():
    assert classify_chat_status(response(429))["kind"] == "rate_limited"
    assert classify_chat_status(response(403))["kind"] == "authentication"
    assert classify_chat_status(response(422))["kind"] == "invalid_request"
    assert classify_chat_status(response(408))["kind"] == "unknown_transient"
    assert classify_chat_status(response(418))["kind"] == "unknown_permanent"
    assert classify_chat_status(response(499)) == {"type": "cancelled"}


def test_pruning_keeps_schema_keys_only():
    schema = {"properties": {"model": {}, "base_url": {}}}
    cfg = {"model": "gpt-4o-mini", "base_url": "https://example.invalid", "extra": 1}
    assert prune(cfg, schema) == {"model": "gpt-4o-mini", "base_url": "https://example.invalid"}


def test_pruning_recurses_into_inline_properties_but_not_refs():
    schema = {
        "properties": {
            "nested": {"properties": {"keep": {}}},
            "by_ref": {"$ref": "#/definitions/X"},
        }
    }
    cfg = {"nested": {"keep": 1, "drop": 2}, "by_ref": {"anything": 3}, "allowed_hosts": ["x"]}
    assert prune(cfg, schema) == {"nested": {"keep": 1}, "by_ref": {"anything": 3}}
    assert prune(cfg, {"type": "object"}) == cfg


def test_stream_lines_are_lf_split_with_a_final_flush():
    pieces = [b"data: a\n\nda", b"ta: b\n", b"tail"]
    assert list(iter_lines(iter(pieces))) == [b"data: a\n", b"\n", b"data: b\n", b"tail\n"]
    assert list(iter_lines(iter([b"x\n"]))) == [b"x\n", b"\n"]
