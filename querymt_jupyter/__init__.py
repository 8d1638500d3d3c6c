"""querymt-jupyter: QueryMT's LLM-provider plugins (native and Wasm) inside a Jupyter kernel.

    from querymt_jupyter import PluginRegistry
    registry = PluginRegistry.default()
    provider = registry.builder("echo-wasm").model("echo-1").build()
    provider.chat([{"role": "user", "content": "hello"}]).text

    from querymt_jupyter import batch      # the same prompt over every row of a DataFrame
    batch(df, "Summarise: {text}", provider="echo-wasm", concurrency=8)
"""

from . import errors
from .batch import batch
from .config import ProviderSpec, RegistryConfig, load_config
from .errors import *  # noqa: F403 - the whole error tree is public
from .factory import PluginFactory
from .provider import Provider, ProviderBuilder
from .registry import LoadReport, PluginRegistry
from .version import __version__
from .wire import ChatMessage, ChatResponse, CompletionResponse, StreamChunk, Usage


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """Where JupyterLab finds the prebuilt extension (built from labextension/ into the package)."""
    return [{"src": "labextension", "dest": "querymt-jupyter"}]


def load_ipython_extension(ipython: object) -> None:
    """``%load_ext querymt_jupyter``: register the magics and the prompt log; loads no plugin."""
    from .extension import load

    load(ipython)

__all__ = [
    "ChatMessage",
    "ChatResponse",
    "CompletionResponse",
    "LoadReport",
    "PluginFactory",
    "PluginRegistry",
    "Provider",
    "ProviderBuilder",
    "ProviderSpec",
    "RegistryConfig",
    "StreamChunk",
    "Usage",
    "__version__",
    "batch",
    "load_config",
    *errors.__all__,
]
