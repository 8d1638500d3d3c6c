"""Every error querymt-jupyter raises, as one tree.

    QueryMTError
    ├── ConfigError            a plugins.toml/json/yaml problem (file, line, field)
    │   └── ConfigEditError    configedit: an edit that would change more than asked (nothing changed)
    ├── CommandLineError       oci.commands: bad words for push / pull / inspect (shell or %querymt)
    ├── OciError               oci: a pull, push, inspect or signature check failed (names the reference)
    │   └── DigestMismatchError, RegistryUnreachableError, SignatureError
    ├── ProviderNotFoundError  an unknown provider name (lists the known ones)
    ├── UnknownKeyError        a builder parameter or -p key the plugin's schema lacks (keys.py)
    ├── BatchError             batch: a prompt over a table cannot start (nothing was sent)
    │   └── TemplateFieldError a {field} of the template that is not a column of the table
    ├── BuildError             compiling a bundled or user plugin with zig cc failed
    ├── PluginLoadError        a plugin file is missing, is not a plugin, or fails its load sequence
    │   └── AbiMismatchError   a native library that is not a querymt-jupyter ABI v1 plugin
    ├── HostBlockedError       a request to a host outside the provider's allowed_hosts
    └── LLMError               an LLMErrorPayload (wire spec 5.3): one class per ``type``
        ├── PluginCallError    plugin_error: a trap, or an export failing with free text
        ├── AuthError, RateLimitedError, InvalidRequestError, HttpStatusError, HttpError,
        ├── TransportError, CancelledError, NotImplementedByPluginError, ToolConfigError,
        ├── JsonError, ResponseFormatError, ProviderError, InvalidUrlError, IoError,
        └── RemoteStreamDisconnectedError, RemoteStreamReconnectedError

The classes marked with a module are defined there, beside the code that raises them.
Messages never contain API keys: the registry redacts known secrets before raising.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = [
    "AbiMismatchError",
    "AuthError",
    "BatchError",
    "BuildError",
    "CancelledError",
    "ConfigError",
    "HostBlockedError",
    "HttpError",
    "HttpStatusError",
    "InvalidRequestError",
    "InvalidUrlError",
    "IoError",
    "JsonError",
    "LLMError",
    "NotImplementedByPluginError",
    "PluginCallError",
    "PluginLoadError",
    "ProviderError",
    "ProviderNotFoundError",
    "QueryMTError",
    "RateLimitedError",
    "RemoteStreamDisconnectedError",
    "RemoteStreamReconnectedError",
    "ResponseFormatError",
    "TemplateFieldError",
    "ToolConfigError",
    "TransportError",
    "UnknownKeyError",
    "decode_plugin_error",
    "error_from_payload",
]


class QueryMTError(Exception):
    """Base class; ``hint`` (when set) tells the user what to do next."""

    hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint

    def __str__(self) -> str:
        text = BaseException.__str__(self)  # not KeyError's quoting (ProviderNotFoundError is one)
        return f"{text}\n  hint: {self.hint}" if self.hint else text


class ConfigError(QueryMTError):
    """A config file could not be read; ``path``, ``line``, ``column`` and ``field`` say where."""

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        column: int | None = None,
        field: str | None = None,
        hint: str | None = None,
    ) -> None:
        where = path or "<config>"
        if line is not None:
            where += f":{line}" if column is None else f":{line}:{column}"  # as compilers write it
        if field is not None:
            where += f" [{field}]"
        super().__init__(f"{where}: {message}", hint=hint)
        self.path, self.line, self.column, self.field = path, line, column, field


class ProviderNotFoundError(QueryMTError, KeyError):
    def __init__(self, name: str, known: list[str]) -> None:
        listing = ", ".join(known) if known else "(none configured)"
        QueryMTError.__init__(self, f"no provider named {name!r}; known providers: {listing}")
        self.name, self.known = name, known


class UnknownKeyError(QueryMTError, ValueError):
    """A key no schema names; ``valid`` lists the keys there are (``keys.check_keys`` raises it)."""

    def __init__(self, message: str, *, key: str, valid: tuple[str, ...], hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.key, self.valid = key, valid


class BatchError(QueryMTError):
    """A batch over a table was refused before any request was sent (an empty target, a bad argument)."""


class TemplateFieldError(BatchError, KeyError):
    """``field`` of a batch template names no column; ``columns`` lists those there are."""

    def __init__(self, message: str, *, field: str, columns: tuple[str, ...], hint: str | None = None) -> None:
        BatchError.__init__(self, message, hint=hint)
        self.field, self.columns = field, columns


class BuildError(QueryMTError):
    """zig cc failed; the message carries the compiler's output."""


class PluginLoadError(QueryMTError):
    def __init__(self, plugin: str, message: str, *, path: str | None = None, hint: str | None = None) -> None:
        where = f" ({path})" if path else ""
        super().__init__(f"plugin {plugin!r}{where}: {message}", hint=hint)
        self.plugin, self.path = plugin, path


class AbiMismatchError(PluginLoadError):
    """A shared library that does not speak querymt-jupyter native ABI v1."""


class HostBlockedError(QueryMTError):
    def __init__(self, plugin: str, host: str, allowed: list[str]) -> None:
        super().__init__(
            f"plugin {plugin!r} may not reach host {host!r} (allowed_hosts: {allowed})",
            hint=f'add "{host}" to allowed_hosts in [providers.config] of {plugin!r}, or set base_url',
        )
        self.plugin, self.host, self.allowed = plugin, host, allowed


class LLMError(QueryMTError):
    """A structured error payload from a plugin or from the host's HTTP classifier.

    ``payload`` is the decoded LLMErrorPayload dict; ``type`` its tag.
    """

    type = "generic_error"

    def __init__(self, payload: dict[str, Any], *, plugin: str | None = None) -> None:
        message = payload.get("message") or payload.get("type", "error")
        prefix = f"{plugin}: " if plugin else ""
        super().__init__(f"{prefix}{payload.get('type')}: {message}")
        self.payload, self.plugin = payload, plugin

    @property
    def retry_after_secs(self) -> int | None:
        return self.payload.get("retry_after_secs")


class PluginCallError(LLMError):
    """``plugin_error``: a trap, or an export that failed with free text (code -1), or said so itself."""

    type = "plugin_error"
    op: str | None = None  # the export that failed, when the host knows it

    @classmethod
    def from_text(cls, plugin: str, op: str, text: str) -> PluginCallError:
        error = cls({"type": "plugin_error", "message": f"{op} failed: {text}"}, plugin=plugin)
        error.op = op
        return error


class AuthError(LLMError):
    type = "auth_error"
    hint = "check the API key: set the environment variable the plugin names in api_key_name"


class RateLimitedError(LLMError):
    type = "rate_limited"


class InvalidRequestError(LLMError):
    type = "invalid_request"


class HttpStatusError(LLMError):
    type = "http_status"

    @property
    def status_code(self) -> int | None:
        return self.payload.get("status_code")


class TransportError(LLMError):
    type = "transport"


class CancelledError(LLMError):
    type = "cancelled"


class NotImplementedByPluginError(LLMError):
    type = "not_implemented"


class JsonError(LLMError):
    type = "json_error"


class ResponseFormatError(LLMError):
    type = "response_format_error"


class ProviderError(LLMError):
    """``provider_error``; ``kind`` (when present) says whether a retry may help."""

    type = "provider_error"

    @property
    def kind(self) -> str | None:
        return self.payload.get("kind")


class ToolConfigError(LLMError):
    type = "tool_config_error"


class HttpError(LLMError):
    type = "http_error"


class InvalidUrlError(LLMError):
    type = "invalid_url"


class IoError(LLMError):
    type = "io_error"


class RemoteStreamDisconnectedError(LLMError):
    type = "remote_stream_disconnected"


class RemoteStreamReconnectedError(LLMError):
    type = "remote_stream_reconnected"


def _error_classes() -> dict[str, type[LLMError]]:
    classes = {cls.type: cls for cls in LLMError.__subclasses__()}
    classes["generic_error"] = LLMError
    return classes


_BY_TYPE = _error_classes()


def error_from_payload(payload: dict[str, Any], plugin: str | None = None) -> LLMError:
    """The typed exception for an LLMErrorPayload (unknown types fall back to LLMError)."""
    return _BY_TYPE.get(str(payload.get("type")), LLMError)(payload, plugin=plugin)


def decode_plugin_error(plugin: str, op: str, message: bytes | str) -> LLMError:
    """Turn an export's error message into an exception (wire spec 5.2).

    A message that parses as ``{"payload": {"type": str, ...}}`` is structured; anything else is
    free text, which QueryMT reports as ``plugin_error``.
    """
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    payload = doc.get("payload") if isinstance(doc, dict) else None
    if isinstance(payload, dict) and isinstance(payload.get("type"), str):
        return error_from_payload(payload, plugin)
    return PluginCallError.from_text(plugin, op, text)
