"""How fast batch() answers a table: by concurrency against a slow server, and a local model on Dask.

    python -m querymt_jupyter.bench.batch [--rows 96] [--latency 0.1] [--tinyllm-rows 64] [--tokens 128]

Three tables:

- **concurrency**: the bundled openai plugin (Wasm and native) against the loopback server answering
  every request after ``--latency`` seconds, at concurrency 1, 2, 4, 8 and 16: rows/s, the speed-up
  over concurrency 1, and the host's overhead per call (the call's time less the server's latency:
  the plugin, HTTP on 127.0.0.1, the pool) and per row (wall time × concurrency ÷ rows, less the
  server's latency: everything, the driver's store writes and progress included);
- **resume**: a batch in a child process killed part way, then run again here: the rows the store
  kept, the requests the rerun sent, and how many of those were rows already answered (goal: 0);
- **tinyllm**: the bundled language model (compute-bound, ``--tokens`` greedy tokens a row) in this
  process with 1 and 2 threads, and on a Dask LocalCluster of two worker processes.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from ..batch import ResultStore, batch, cluster
from ..loopback import LoopbackOpenAI
from ..registry import PluginRegistry

__all__ = ["concurrency_table", "resume_table", "tinyllm_table"]

LEVELS = (1, 2, 4, 8, 16)


def _table(rows: int) -> pd.DataFrame:
    return pd.DataFrame({"text": [f"row {i}: the quick brown fox" for i in range(rows)]})


def _openai_config(folder: Path, server: LoopbackOpenAI, kind: str) -> Path:
    path = folder / f"openai-{kind}.toml"
    path.write_text(
        f'[[providers]]\nname = "openai"\npath = "bundled:openai.{kind}"\n[providers.config]\n'
        f'base_url = "{server.base_url}"\napi_key = "sk-bench"\nmodel = "gpt-4o-mini"\n'
    )
    return path


def concurrency_table(rows: int = 96, latency: float = 0.1, levels: tuple[int, ...] = LEVELS) -> pd.DataFrame:
    records = []
    with tempfile.TemporaryDirectory() as tmp, LoopbackOpenAI(reply="label: bug", latency=latency) as server:
        folder = Path(tmp)
        for kind in ("wasm", "native"):
            with PluginRegistry.from_path(_openai_config(folder, server, kind)) as registry:
                batch(_table(max(levels)), "{text}", "openai", registry=registry, concurrency=max(levels),
                      store=folder / "warm", progress=False)  # loads, and grows the instance pool once
                for level in levels:
                    server.max_in_flight = 0
                    started = time.perf_counter()
                    out = batch(_table(rows), "{text}", "openai", registry=registry, concurrency=level,
                                store=folder / f"{kind}-{level}.sqlite", progress=False)
                    wall = time.perf_counter() - started
                    records.append({
                        "plugin": f"openai ({kind})",
                        "concurrency": level,
                        "rows/s": rows / wall,
                        "in flight (server)": server.max_in_flight,
                        "call ms": out["latency_ms"].mean(),
                        "host ms per call": out["latency_ms"].mean() - latency * 1000,
                        "host ms per row": wall * level / rows * 1000 - latency * 1000,
                    })
    table = pd.DataFrame(records)
    first = table.groupby("plugin")["rows/s"].transform("first")
    table.insert(3, "× concurrency 1", table["rows/s"] / first)
    return table.set_index(["plugin", "concurrency"]).round(2)


_CHILD = """
import sys
import pandas as pd
from querymt_jupyter import PluginRegistry, batch
frame = pd.DataFrame({"text": [f"row {i}" for i in range(int(sys.argv[3]))]})
batch(frame, "{text}", "openai", registry=PluginRegistry.from_path(sys.argv[1]), store=sys.argv[2],
      concurrency=4, progress=False)
"""


def resume_table(rows: int = 200, latency: float = 0.02) -> pd.DataFrame:
    """Kill a batch once half its rows are stored, run it again, count what the rerun sent."""
    with tempfile.TemporaryDirectory() as tmp, LoopbackOpenAI(reply="ok", latency=latency) as server:
        folder = Path(tmp)
        config, store = _openai_config(folder, server, "wasm"), folder / "store.sqlite"
        child = subprocess.Popen([sys.executable, "-c", _CHILD, str(config), str(store), str(rows)], cwd=folder)
        deadline = time.monotonic() + 120
        while _stored(store) < rows // 2 and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        kept = _stored(store)
        sent_before = len(server.requests)
        server.clear_requests()
        with PluginRegistry.from_path(config) as registry:
            out = batch(pd.DataFrame({"text": [f"row {i}" for i in range(rows)]}), "{text}", "openai",
                        registry=registry, store=store, progress=False)
        resent = len(server.requests)
    return pd.DataFrame([{
        "rows": rows,
        "requests before the kill": sent_before,
        "rows kept at the kill": kept,
        "requests of the rerun": resent,
        "finished rows sent again": resent - (rows - kept),
        "rows answered in the end": int(out["answer"].notna().sum()),
    }]).set_index("rows")


def _stored(path: Path) -> int:
    if not path.exists():
        return 0
    try:
        with ResultStore(path) as store:
            return len(store)
    except Exception:  # the child is creating the file
        return 0


def tinyllm_table(rows: int = 64, tokens: int = 128) -> pd.DataFrame:
    records = []
    # One thread per call: the native build's own threads would fight the batch's for the cores.
    params = {"max_tokens": tokens, "temperature": 0, "stop_at_eos": False, "threads": 1}
    frame = pd.DataFrame({"text": [f"And the LORD said unto Moses, {i}" for i in range(rows)]})
    with tempfile.TemporaryDirectory() as tmp, PluginRegistry.default() as registry:
        folder = Path(tmp)
        client = cluster.default_client()
        runs = [("tinyllm-native", "local", 1), ("tinyllm-native", "local", 2), ("tinyllm-native", "dask", 1),
                ("tinyllm-wasm", "local", 1), ("tinyllm-wasm", "local", 2), ("tinyllm-wasm", "dask", 1)]
        for name in ("tinyllm-native", "tinyllm-wasm"):  # warm: builds, loads, the workers' registries
            for engine in ("local", "dask"):
                batch(frame.head(2), "{text}", name, params=params, engine=engine, client=client, registry=registry,
                      store=folder / "warm", resume=False, progress=False)
        for name, engine, level in runs:
            started = time.perf_counter()
            out = batch(frame, "{text}", name, params=params, engine=engine, client=client, concurrency=level,
                        registry=registry, store=folder / f"{name}-{engine}-{level}.sqlite", progress=False)
            wall = time.perf_counter() - started
            where = "2 Dask worker processes" if engine == "dask" else f"this process, {level} thread(s)"
            records.append({"plugin": name, "runs in": where, "rows/s": rows / wall,
                            "tokens/s": out["output_tokens"].sum() / wall})
        cluster.close_default_client()
    table = pd.DataFrame(records)
    first = table.groupby("plugin")["rows/s"].transform("first")
    table["× 1 thread"] = table["rows/s"] / first
    return table.set_index(["plugin", "runs in"]).round(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=96, help="rows per concurrency level")
    parser.add_argument("--latency", type=float, default=0.1, help="the server's seconds per request")
    parser.add_argument("--tinyllm-rows", type=int, default=64, help="rows for the language model")
    parser.add_argument("--tokens", type=int, default=128, help="tokens the language model writes per row")
    args = parser.parse_args()
    print(f"batch() against a loopback server answering after {args.latency * 1000:.0f} ms, {args.rows} rows:")
    print(concurrency_table(args.rows, args.latency).to_string(), end="\n\n")
    print("a batch killed (SIGKILL) once half its rows were stored, then run again:")
    print(resume_table().to_string(), end="\n\n")
    print(f"tinyllm, {args.tinyllm_rows} rows of {args.tokens} greedy tokens:")
    print(tinyllm_table(args.tinyllm_rows, args.tokens).to_string())


if __name__ == "__main__":
    main()
