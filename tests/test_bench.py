"""The benchmark's API, DataFrames and magic: shapes and invariants, never timings.

Runs are tiny (a handful of calls, small payloads) so the whole file takes seconds; what is checked is
what must hold whatever the machine: one row per combination, n == repeat, p5 <= median <= p95, ratios
that agree with the medians, the samples behind every row, the metadata, the views, the magic.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import nbformat
import numpy as np
import pytest
from matplotlib.figure import Figure
from nbclient import NotebookClient

from querymt_jupyter import PluginRegistry, bench
from querymt_jupyter.bench.args import parse_sizes
from querymt_jupyter.bench.stats import KEYS, STAT_COLUMNS
from querymt_jupyter.config import parse_config
from querymt_jupyter.provider import on_call

PROVIDERS = ("echo-native", "echo-wasm")
REPEAT = 6
SIZES = (16, 512)


@pytest.fixture(scope="module")
def registry() -> Iterator[PluginRegistry]:
    with PluginRegistry.default() as registry:
        yield registry


@pytest.fixture(scope="module")
def result(registry: PluginRegistry) -> bench.BenchResult:
    ops = ("noop", "echo_bytes", "chat", "embed", "dispatch", "load")
    return bench.run(PROVIDERS, ops=ops, sizes=SIZES, repeat=REPEAT, registry=registry, progress=False)


def expected_rows() -> set[tuple[str, str, int, int]]:
    ops = ["echo_bytes", "chat", "embed", "dispatch/raw", "dispatch/factory.call", "dispatch/provider.chat"]
    rows = {(p, op, size, 1) for p in PROVIDERS for op in ops for size in SIZES}
    return rows | {(p, op, 0, 1) for p in PROVIDERS for op in ("noop", "load")}


# ---- the summary ----------------------------------------------------------------------------------------


def test_one_summary_row_per_provider_op_and_size(result: bench.BenchResult) -> None:
    summary = result.summary
    assert list(summary.columns) == KEYS + STAT_COLUMNS
    keys = list(zip(summary["provider"], summary["op"], summary["size"], summary["threads"]))
    assert len(keys) == len(set(keys))
    assert set(keys) == expected_rows()
    assert (summary["n"] == REPEAT).all()
    assert dict(zip(summary["provider"], summary["plugin_type"])) == {"echo-native": "native", "echo-wasm": "wasm"}


def test_summary_statistics_are_ordered(result: bench.BenchResult) -> None:
    s = result.summary
    assert (s["min"] > 0).all()
    assert (s["min"] <= s["p5"]).all() and (s["p5"] <= s["median"]).all()
    assert (s["median"] <= s["p95"]).all() and (s["p95"] <= s["p99"]).all()
    assert (s["std"] >= 0).all()
    assert np.allclose(s["ops/s"], s["threads"] * 1e6 / s["mean"])


def test_statistics_are_those_of_the_samples(result: bench.BenchResult) -> None:
    samples = result.samples
    for _, row in result.summary.iterrows():
        us = samples[np.logical_and.reduce([samples[k] == row[k] for k in KEYS])]["us"]
        assert len(us) == row["n"]
        assert row["median"] == pytest.approx(us.median())
        assert row["mean"] == pytest.approx(us.mean())
        assert row["min"] == pytest.approx(us.min())


def test_ratios_are_against_the_native_build(result: bench.BenchResult) -> None:
    s = result.summary
    assert (s["vs"] == "echo-native").all()
    base = s[s["provider"] == "echo-native"].set_index(["op", "size"])["median"]
    for _, row in s.iterrows():
        assert row["ratio"] == pytest.approx(row["median"] / base[row["op"], row["size"]])
        assert row["ratio_lo"] <= row["ratio"] <= row["ratio_hi"]
    native = s[s["provider"] == "echo-native"]
    assert (native[["ratio", "ratio_lo", "ratio_hi"]] == 1.0).all().all()


def test_without_both_types_the_first_provider_is_the_baseline(registry: PluginRegistry) -> None:
    result = bench.run(("echo-wasm", "echo-native"), ops=("noop",), repeat=3, registry=registry, progress=False)
    assert set(result.summary["vs"]) == {"echo-native"}  # both types present: native, though listed second
    alone = bench.run(("echo-wasm",), ops=("noop",), repeat=3, registry=registry, progress=False)
    assert alone.summary[["provider", "vs", "ratio"]].values.tolist() == [["echo-wasm", "echo-wasm", 1.0]]


# ---- the samples and the metadata ---------------------------------------------------------------------


def test_samples_are_one_row_per_timed_call(result: bench.BenchResult) -> None:
    samples = result.samples
    assert list(samples.columns) == [*KEYS, "round", "ns", "us"]
    assert len(samples) == len(result.summary) * REPEAT
    assert (samples.groupby(KEYS).size() == REPEAT).all()
    assert np.allclose(samples["us"], samples["ns"] / 1000)
    assert samples["ns"].dtype == np.int64 and (samples["ns"] > 0).all()
    assert set(samples["round"]) == set(range(REPEAT))  # repeat < 10: one call per round


def test_metadata_records_machine_versions_and_method(result: bench.BenchResult) -> None:
    meta = result.metadata
    assert {"date", "machine", "python", "extism", "zig", "packages", "method"} <= set(meta)
    assert {"cpu", "cpus", "system", "arch", "virtualised", "load_average"} <= set(meta["machine"])
    assert {"querymt-jupyter", "extism", "pandas"} <= set(meta["packages"])
    method = meta["method"]
    assert method["repeat"] == REPEAT and method["gc"] and method["timer_overhead_ns"] > 0
    assert set(method["providers"]) == set(PROVIDERS)
    assert method["providers"]["echo-wasm"]["plugin_type"] == "wasm"
    assert method["skipped"] == []
    json.dumps(meta)  # plain data: storable next to the samples


# ---- the views ------------------------------------------------------------------------------------------


def test_overhead_compares_the_layers_of_one_call(result: bench.BenchResult) -> None:
    overhead = result.overhead
    assert list(overhead.index) == [
        (p, t, size) for p, t in (("echo-native", "native"), ("echo-wasm", "wasm")) for size in SIZES
    ]
    assert np.allclose(overhead["factory.call +µs"], overhead["factory.call"] - overhead["raw"])
    assert np.allclose(overhead["provider.chat +%"], 100 * (overhead["provider.chat"] / overhead["raw"] - 1))
    medians = result.summary.set_index(["provider", "op", "size"])["median"]
    assert overhead.loc[("echo-wasm", "wasm", 16), "raw"] == medians["echo-wasm", "dispatch/raw", 16]


def test_plot_and_notebook_view(result: bench.BenchResult) -> None:
    figure = result.plot()
    assert isinstance(figure, Figure)
    titles = [ax.get_title() for ax in figure.axes]
    assert titles == ["Latency vs payload", "Spread per operation (smallest payload)"]
    assert result.png().startswith(b"\x89PNG")
    view = result._repr_html_()
    assert "<table" in view and "data:image/png;base64," in view
    result.show_plot = False
    assert "data:image/png" not in result._repr_html_()
    result.show_plot = True


def test_http_chat_measures_throughput_by_threads(registry: PluginRegistry) -> None:
    result = bench.run(
        PROVIDERS, ops=("http-chat",), sizes=(16, 64), threads=(1, 2), repeat=4, registry=registry, progress=False
    )
    summary = result.summary
    rows = set(zip(summary["provider"], summary["size"], summary["threads"]))
    assert rows == {(p, 16, n) for p in ("openai-native", "openai-wasm") for n in (1, 2)}  # the smallest size
    assert (summary["n"] == 4).all() and (summary["vs"] == "openai-native").all()
    throughput = result.throughput
    assert list(throughput.index) == [1, 2]
    assert list(throughput.columns) == [
        "openai-native",
        "openai-wasm",
        "openai-native speed-up",
        "openai-wasm speed-up",
    ]
    assert (throughput.iloc[0, 2:] == 1.0).all()
    assert [ax.get_title() for ax in result.plot().axes][-1] == "http-chat throughput vs threads"


# ---- method ---------------------------------------------------------------------------------------------


def test_call_hooks_are_detached_while_timing_and_back_after(registry: PluginRegistry) -> None:
    seen: list[object] = []
    unhook = on_call(seen.append)
    try:
        bench.run(("echo-wasm",), ops=("chat", "embed"), sizes=(16,), repeat=3, registry=registry, progress=False)
        assert seen == []  # no prompt-log row for benchmark calls
        registry.builder("echo-wasm").build().chat("after")
        assert len(seen) == 1
    finally:
        unhook()


def test_operations_a_plugin_lacks_are_skipped_and_named() -> None:
    config = parse_config(
        '[[providers]]\nname = "echo-native"\npath = "bundled:echo.native"\n'
        '[[providers]]\nname = "remote"\npath = "bundled:openai.native"\n[providers.config]\n'
        'base_url = "http://127.0.0.1:9/v1"\napi_key = "sk-unused"\nmodel = "m"\n',
        "toml",
    )
    with PluginRegistry(config) as registry:
        result = bench.run(
            ("echo-native", "remote"),
            ops=("noop", "dispatch"),
            sizes=(16,),
            repeat=2,
            registry=registry,
            progress=False,
        )
    assert set(result.summary["provider"]) == {"echo-native"}
    skipped = result.metadata["method"]["skipped"]
    assert len(skipped) == 2 and all(entry.startswith("remote: ") for entry in skipped)


def test_bad_arguments_are_refused(registry: PluginRegistry) -> None:
    with pytest.raises(ValueError, match="unknown benchmark operation"):
        bench.run(ops=("teleport",), registry=registry, progress=False)
    with pytest.raises(ValueError, match="sizes"):
        bench.run(sizes=(0,), registry=registry, progress=False)


@pytest.mark.parametrize(
    ("text", "sizes"),
    [("16,1k,64k,1m", (16, 1024, 65536, 1048576)), ("2KB, 3 m", (2048, 3 * 1024**2)), ("1g", (1024**3,))],
)
def test_sizes_accept_binary_units(text: str, sizes: tuple[int, ...]) -> None:
    assert parse_sizes(text) == sizes


def test_a_size_must_be_a_number_with_a_unit() -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_sizes("16,lots")


# ---- the magic, in a real kernel --------------------------------------------------------------------------

MAGIC_CELLS = [
    "from querymt_jupyter.bench.magic import register\nregister(get_ipython())",
    "from querymt_jupyter.provider import on_call\nlogged = []\nunhook = on_call(logged.append)",
    "df = %querymt_bench echo-native echo-wasm --ops noop,chat --sizes 16,1k --repeat 3 -o r -q",
    (
        "import json\nprint(json.dumps({'rows': len(df), 'n': sorted(set(df['n'])), 'samples': len(r),"
        " 'sizes': sorted(set(r['size'])), 'columns': list(r.columns), 'logged': len(logged)}))"
    ),
    "%querymt_bench echo-native --ops noop --repeat 2",
]


def test_the_magic_in_a_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUERYMT_JUPYTER_LOG", "off")
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in MAGIC_CELLS])
    client = NotebookClient(
        notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    report = json.loads(notebook.cells[3].outputs[0]["text"])
    assert report == {
        "rows": 6,  # noop at size 0, chat at 16 and 1024, for each provider
        "n": [3],
        "samples": 18,
        "sizes": [0, 16, 1024],
        "columns": [*KEYS, "round", "ns", "us"],
        "logged": 0,
    }
    assert notebook.cells[2].outputs == []  # -q and an assignment: nothing shown
    shown = notebook.cells[4].outputs
    assert any("image/png" in out.get("data", {}) for out in shown)  # the plot
    assert any("<table" in out.get("data", {}).get("text/html", "") for out in shown)  # the summary


# ---- complete: tokens per second ---------------------------------------------------------------------


def test_complete_reports_tokens_per_second(registry: PluginRegistry) -> None:
    tokens = 12
    result = bench.run(
        ("tinyllm-native", "tinyllm-wasm", "echo-native"), ops=("complete",), tokens=tokens, repeat=3,
        registry=registry, progress=False,
    )
    s = result.summary
    assert set(s["size"]) == {tokens}  # the size of a complete row is the tokens each call generates
    assert np.allclose(s["tokens/s"], tokens * s["ops/s"])
    table = result.tokens_per_second
    assert list(table["provider"]) == ["tinyllm-native", "tinyllm-wasm", "echo-native"]
    assert table.loc[1, "vs"] == "tinyllm-native" and table.loc[1, "time ratio"] > 0
    # every call really generates the tokens asked for: the benchmark turned stop_at_eos off where it exists
    exact = bench.ops._exact_length(registry, bench.ops.Target.build(registry, "tinyllm-native"))
    assert exact.cfg["stop_at_eos"] is False
    answer = exact.chat(bench.ops.COMPLETE_PROMPT)
    assert answer.usage.output_tokens == 128 and answer.finish_reason == "Length"  # the config's max_tokens


def test_the_tinyllm_variant_table(tmp_path: Path) -> None:
    from querymt_jupyter.bench import tinyllm

    table = tinyllm.measure(tokens=4, repeat=1, progress=False)
    assert list(table.index) == list(tinyllm.VARIANTS)
    assert list(table.columns[:2]) == ["int8", "fp32"] and (table[["int8", "fp32"]] > 0).all().all()
    # each row is the build it names: its plugin type, and the three Wasm builds as three different modules
    with PluginRegistry.from_path(tinyllm._config(tmp_path)) as registry:
        factories = {name: registry[f"{name} | int8"] for name in tinyllm.VARIANTS}
        assert {name: f.plugin_type for name, f in factories.items()} == {
            name: kind for name, (kind, _, _) in tinyllm.VARIANTS.items()
        }
        wasm_builds = {factories[name].path for name in ("wasm, relaxed simd", "wasm, simd128", "wasm, scalar")}
        assert len(wasm_builds) == 3
