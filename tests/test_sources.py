"""Plugin sources other than local files, and plugins that misbehave at run time."""

from __future__ import annotations

import http.server
import shutil
import threading
from collections.abc import Iterator

import pytest

from querymt_jupyter import PluginCallError, PluginLoadError, PluginRegistry
from querymt_jupyter.build import build_plugin, bundled_plugin

TRAPPING_PLUGIN = r"""
#include "querymt_plugin.h"
static int32_t op_name(qmt_slice in, qmt_buf *out) { (void)in; qmt_buf_puts(out, "trappy"); return 0; }
static int32_t op_ok(qmt_slice in, qmt_buf *out) { (void)in; (void)out; return 0; }
static int32_t op_echo(qmt_slice in, qmt_buf *out) { qmt_buf_put(out, in.data, in.len); return 0; }
static int32_t op_chat(qmt_slice in, qmt_buf *out) {
    for (size_t i = 0; i < in.len; i++)
        if (in.data[i] == '#') __builtin_trap();  /* a guest bug, on demand */
    qmt_buf_puts(out, "{\"text\":\"fine\",\"tool_calls\":null,\"thinking\":null,\"usage\":null,\"finish_reason\":\"Stop\"}");
    return 0;
}
#define OPS(X) X(name, op_name) X(init_logging, op_ok) X(from_config, op_echo) X(chat, op_chat)
QMT_PLUGIN(OPS)
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[tuple[str, list[str]]]:
    """A static file server on 127.0.0.1 serving the bundled echo.wasm; yields (base URL, request log)."""
    root = tmp_path_factory.mktemp("www")
    shutil.copy(bundled_plugin("echo", "wasm"), root / "echo.wasm")
    log: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args) -> None:
            log.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", log
    server.shutdown()
    server.server_close()


def test_a_plugin_loads_from_an_http_url_and_is_cached(served, tmp_path, monkeypatch):
    base, log = served
    monkeypatch.setenv("QUERYMT_JUPYTER_CACHE", str(tmp_path / "cache"))
    config = tmp_path / "plugins.toml"
    config.write_text(f'[[providers]]\nname = "remote"\npath = "{base}/echo.wasm"\n')
    with PluginRegistry.from_path(config) as registry:
        assert registry.builder("remote").build().chat("over http").text == "echo: over http"
    downloads = len(log)
    with PluginRegistry.from_path(config) as registry:  # second load: from the cache, no request
        assert registry["remote"].plugin_type == "wasm"
    assert len(log) == downloads == 1


def test_a_missing_url_names_the_url(served, tmp_path, monkeypatch):
    base, _ = served
    monkeypatch.setenv("QUERYMT_JUPYTER_CACHE", str(tmp_path / "cache"))
    config = tmp_path / "plugins.toml"
    config.write_text(f'[[providers]]\nname = "gone"\npath = "{base}/gone.wasm"\n')
    with PluginRegistry.from_path(config) as registry, pytest.raises(PluginLoadError, match="gone.wasm") as info:
        registry.get("gone")
    assert "404" in str(info.value)


def test_a_trapping_wasm_plugin_fails_the_call_and_stays_usable(tmp_path):
    source = tmp_path / "trappy.c"
    source.write_text(TRAPPING_PLUGIN)
    wasm = build_plugin(source, "wasm", out_dir=tmp_path)
    config = tmp_path / "plugins.toml"
    config.write_text(f'[[providers]]\nname = "trappy"\npath = "{wasm}"\n')
    with PluginRegistry.from_path(config) as registry:
        provider = registry.builder("trappy").build()
        with pytest.raises(PluginCallError, match="trappy") as info:
            provider.chat("boom #")
        assert info.value.op == "chat" and "wasm backtrace" in str(info.value)
        assert provider.chat("after the trap").text == "fine"
