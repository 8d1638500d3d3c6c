"""What the magics cost a notebook: ``%load_ext`` time, streamed-chunk latency, per-prompt overhead.

    python -m querymt_jupyter.bench.magics

Everything runs in real kernels (jupyter_client) against a LoopbackOpenAI on 127.0.0.1 streaming
8 chunks 25 ms apart, the setting the issue compares Jupyter AI, ``llm`` and cellmage in:

- ``%load_ext``: wall time of the line magic inside a fresh kernel (median of 3 kernels);
- chunk on screen: for each streamed chunk, when the front end (this process, on the kernel's IOPub
  socket) received the display update containing it, minus when the server wrote it;
- overhead per prompt: a ``%%querymt --no-stream`` cell's round trip, minus an empty cell's, minus the
  same HTTP request sent straight with httpx (so what remains is what the magic and host add).
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from jupyter_client.manager import start_new_kernel

from ..loopback import LoopbackOpenAI

PROMPT = "Tell me a short story about a robot"


class _Kernel:
    def __init__(self, folder: Path) -> None:
        env = {**os.environ, "QUERYMT_JUPYTER_LOG": "off"}
        self.manager, self.client = start_new_kernel(kernel_name="python3", cwd=str(folder), env=env)

    def run(self, code: str, on_message: Any = None) -> float:
        """Run a cell; the wall time from request to reply, in ms."""
        started = time.perf_counter()
        reply = self.client.execute_interactive(code, output_hook=on_message or (lambda _: None), timeout=60)
        if reply["content"]["status"] != "ok":
            raise RuntimeError(f"cell failed: {code!r}")
        return (time.perf_counter() - started) * 1000

    def close(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


def _config(folder: Path, server: LoopbackOpenAI) -> None:
    (folder / "plugins.toml").write_text(
        '[[providers]]\nname = "local"\npath = "bundled:openai.wasm"\n[providers.config]\n'
        f'base_url = "{server.base_url}"\nmodel = "loop-1"\n'
    )


def load_ext_ms(folder: Path, kernels: int = 3) -> float:
    times = []
    for _ in range(kernels):
        kernel = _Kernel(folder)
        try:
            code = "import time as _t; _s = _t.perf_counter(); get_ipython().run_line_magic('load_ext', 'querymt_jupyter'); print((_t.perf_counter() - _s) * 1000)"
            out: list[str] = []
            kernel.run(code, lambda m: out.append(m["content"].get("text", "")) if m["msg_type"] == "stream" else None)
            times.append(float("".join(out)))
        finally:
            kernel.close()
    return statistics.median(times)


def chunk_latencies_ms(kernel: _Kernel, server: LoopbackOpenAI, prompts: int = 5) -> list[float]:
    latencies: list[float] = []
    for _ in range(prompts):
        server.sent.clear()
        arrivals: list[tuple[float, str]] = []

        def on_message(message: dict[str, Any]) -> None:
            if message["msg_type"] in ("display_data", "update_display_data"):
                arrivals.append((time.time(), message["content"]["data"].get("text/markdown", "")))

        kernel.run(f"%%querymt local\n{PROMPT}", on_message)
        text = ""
        for sent_at, data in server.sent:
            delta = _content_delta(data)
            if not delta:
                continue
            text += delta
            shown_at = next(t for t, shown in arrivals if len(shown) >= len(text))
            latencies.append((shown_at - sent_at) * 1000)
    return latencies


def _content_delta(data: str) -> str:
    if data == "[DONE]":
        return ""
    choices = json.loads(data).get("choices") or [{}]
    return (choices[0].get("delta") or {}).get("content") or ""


def overhead_ms(kernel: _Kernel, server: LoopbackOpenAI, rounds: int = 30) -> dict[str, float]:
    body = {"model": "loop-1", "messages": [{"role": "user", "content": PROMPT}], "stream": False}
    with httpx.Client() as client:
        empty, magic, http = [], [], []
        for _ in range(rounds):  # interleaved, so drift hits all three
            empty.append(kernel.run("pass"))
            magic.append(kernel.run(f"%%querymt local --no-stream\n{PROMPT}"))
            started = time.perf_counter()
            client.post(f"{server.base_url}/chat/completions", json=body).raise_for_status()
            http.append((time.perf_counter() - started) * 1000)
    medians = {name: statistics.median(v) for name, v in (("empty", empty), ("magic", magic), ("http", http))}
    medians["overhead"] = medians["magic"] - medians["empty"] - medians["http"]
    return medians


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, LoopbackOpenAI(reply=" ".join(["word"] * 16), chunks=8, chunk_delay=0.025) as server:
        folder = Path(tmp)
        _config(folder, server)
        print(f"%load_ext querymt_jupyter: {load_ext_ms(folder):.0f} ms (median of 3 fresh kernels)")
        kernel = _Kernel(folder)
        try:
            kernel.run("%load_ext querymt_jupyter")
            kernel.run(f"%%querymt local\n{PROMPT}")  # warm: loads the plugin
            latencies = chunk_latencies_ms(kernel, server)
            print(
                f"chunk on screen after the server sent it: median {statistics.median(latencies):.2f} ms, "
                f"max {max(latencies):.2f} ms ({len(latencies)} chunks, 8 per prompt, 25 ms apart)"
            )
            server.chunk_delay = 0.0
            o = overhead_ms(kernel, server)
            print(
                f"per prompt: %%querymt cell {o['magic']:.2f} ms - empty cell {o['empty']:.2f} ms - "
                f"raw HTTP {o['http']:.2f} ms = {o['overhead']:.2f} ms overhead (medians of 30)"
            )
        finally:
            kernel.close()


if __name__ == "__main__":
    main()
