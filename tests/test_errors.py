"""Error payloads decode to one typed exception per LLMErrorPayload type (spec 5.2, 5.3; checklist 15)."""

from __future__ import annotations

import json
import types

import pytest

import querymt_jupyter
from querymt_jupyter import errors

PAYLOAD_TYPES = {
    "generic_error": errors.LLMError,
    "provider_error": errors.ProviderError,
    "auth_error": errors.AuthError,
    "tool_config_error": errors.ToolConfigError,
    "plugin_error": errors.PluginCallError,
    "invalid_request": errors.InvalidRequestError,
    "http_error": errors.HttpError,
    "not_implemented": errors.NotImplementedByPluginError,
    "json_error": errors.JsonError,
    "invalid_url": errors.InvalidUrlError,
    "io_error": errors.IoError,
    "remote_stream_disconnected": errors.RemoteStreamDisconnectedError,
    "remote_stream_reconnected": errors.RemoteStreamReconnectedError,
    "response_format_error": errors.ResponseFormatError,
    "rate_limited": errors.RateLimitedError,
    "http_status": errors.HttpStatusError,
    "transport": errors.TransportError,
    "cancelled": errors.CancelledError,
}


@pytest.mark.parametrize(("kind", "cls"), PAYLOAD_TYPES.items())
def test_every_payload_type_has_its_class(kind, cls):
    message = json.dumps({"payload": {"type": kind, "message": "m"}})
    error = errors.decode_plugin_error("p", "chat", message.encode())
    assert type(error) is cls
    assert error.payload["type"] == kind and error.plugin == "p"


def test_goldens_decode_with_their_fields(golden):
    provider = errors.decode_plugin_error("p", "chat", golden["plugin_error_provider_structured"]["wire"])
    assert isinstance(provider, errors.ProviderError)
    assert (provider.kind, provider.retry_after_secs) == ("server_overloaded", 2)
    status = errors.decode_plugin_error("p", "chat", golden["plugin_error_http_status"]["wire"])
    assert isinstance(status, errors.HttpStatusError) and status.status_code is not None
    assert isinstance(errors.decode_plugin_error("p", "x", golden["plugin_error_cancelled"]["wire"]), errors.CancelledError)


@pytest.mark.parametrize("text", ["wasm trap: unreachable", '{"payload": 3}', '{"kind": "Cancelled"}', ""])
def test_anything_else_is_plugin_error_with_the_raw_text(text):
    error = errors.decode_plugin_error("p", "chat", text.encode())
    assert isinstance(error, errors.PluginCallError)
    assert error.payload == {"type": "plugin_error", "message": f"chat failed: {text}"}
    assert error.op == "chat"


def test_unknown_payload_types_fall_back_to_llm_error():
    error = errors.decode_plugin_error("p", "chat", b'{"payload":{"type":"brand_new","message":"x"}}')
    assert type(error) is errors.LLMError


def test_config_errors_say_where():
    error = errors.ConfigError("bad", path="plugins.toml", line=4, field="providers[0].path", hint="fix it")
    assert str(error) == "plugins.toml:4 [providers[0].path]: bad\n  hint: fix it"


def test_public_api_lists_exactly_the_public_names():
    public = {
        name
        for name, value in vars(querymt_jupyter).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    } - {"load_ipython_extension"}  # IPython's hook, not API
    assert set(querymt_jupyter.__all__) - {"__version__"} == public
