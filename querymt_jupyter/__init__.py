"""querymt-jupyter: QueryMT's LLM-provider plugins (native and Wasm) inside a Jupyter kernel.

    from querymt_jupyter import PluginRegistry
    registry = PluginRegistry.default()
    provider = registry.builder("echo-wasm").model("echo-1").build()
    provider.chat([{"role": "user", "content": "hello"}]).text
"""

from __future__ import annotations

from .config import ProviderSpec, RegistryConfig, load_config
from .errors import (
    AbiMismatchError,
    AuthError,
    BuildError,
    CancelledError,
    ConfigError,
    HostBlockedError,
    HttpStatusError,
    InvalidRequestError,
    JsonError,
    LLMError,
    NotImplementedByPluginError,
    PluginCallError,
    PluginLoadError,
    ProviderError,
    ProviderNotFoundError,
    QueryMTError,
    RateLimitedError,
    ResponseFormatError,
    TransportError,
)
from .factory import PluginFactory
from .provider import Provider, ProviderBuilder
from .registry import LoadReport, PluginRegistry
from .wire import ChatMessage, ChatResponse, CompletionResponse, StreamChunk, Usage

__version__ = "0.1.0"

__all__ = [
    "AbiMismatchError",
    "AuthError",
    "BuildError",
    "CancelledError",
    "ChatMessage",
    "ChatResponse",
    "CompletionResponse",
    "ConfigError",
    "HostBlockedError",
    "HttpStatusError",
    "InvalidRequestError",
    "JsonError",
    "LLMError",
    "LoadReport",
    "NotImplementedByPluginError",
    "PluginCallError",
    "PluginFactory",
    "PluginLoadError",
    "PluginRegistry",
    "Provider",
    "ProviderBuilder",
    "ProviderError",
    "ProviderNotFoundError",
    "ProviderSpec",
    "QueryMTError",
    "RateLimitedError",
    "RegistryConfig",
    "ResponseFormatError",
    "StreamChunk",
    "TransportError",
    "Usage",
    "__version__",
    "load_config",
]
