"""``python -m querymt_jupyter.bench``: every benchmark operation, printed as tables.

    python -m querymt_jupyter.bench                          # echo-native vs echo-wasm, all operations
    python -m querymt_jupyter.bench --ops noop,chat --repeat 500 echo-native echo-wasm
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from . import OPS, BenchResult, run
from .args import ARGUMENTS, run_options

_FLOAT = "{:,.2f}".format


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m querymt_jupyter.bench", description=__doc__.split("\n\n")[0])
    for names, options in ARGUMENTS:
        parser.add_argument(*names, **options)
    parser.set_defaults(ops=",".join(OPS), repeat=200)
    args = parser.parse_args(argv)
    result = run(**run_options(args), progress=sys.stderr.isatty())
    print(report(result, " ".join(["python -m querymt_jupyter.bench", *(argv if argv is not None else sys.argv[1:])])))
    return 0


def report(result: BenchResult, command: str) -> str:
    """The figures as plain-text tables: provenance, latency and ratio, host overhead, throughput."""
    meta, machine = result.metadata, result.metadata["machine"]
    lines = [
        f"$ {command}",
        f"{meta['date']} · {machine['cpu']} × {machine['cpus']} ({machine['system']}, load {machine['load_average']})",
        f"{meta['python']} · extism runtime {meta['extism']} · zig {meta['zig']} · repeat {meta['method']['repeat']}",
        "",
        "Latency per call, µs (median, p5–p95), and the ratio to the baseline provider [95% CI]",
        latency_table(result.summary).to_string(),
    ]
    if not result.overhead.empty:
        lines += [
            "",
            "Host overhead over the raw runtime call (medians, µs)",
            result.overhead.to_string(float_format=_FLOAT),
        ]
    if not result.tokens_per_second.empty:
        lines += ["", "complete: tokens per second", result.tokens_per_second.to_string(index=False, float_format=_FLOAT)]
    if not result.throughput.empty:
        lines += ["", "http-chat throughput, calls/s, by threads", result.throughput.to_string(float_format=_FLOAT)]
    if meta["method"]["skipped"]:
        lines += ["", "skipped: " + "; ".join(meta["method"]["skipped"])]
    return "\n".join(lines)


def latency_table(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per op × size × threads, a column per provider, and a ratio column per non-baseline one."""
    cells = summary.assign(
        cell=[f"{m:,.2f} ({lo:,.2f}–{hi:,.2f})" for m, lo, hi in zip(summary["median"], summary["p5"], summary["p95"])],
        ratio_cell=[
            f"{r:.2f}× [{lo:.2f}, {hi:.2f}]"
            for r, lo, hi in zip(summary["ratio"], summary["ratio_lo"], summary["ratio_hi"])
        ],
        column=summary["plugin_type"],
    )
    keys = ["op", "size", "threads"]
    latency = cells.pivot_table(index=keys, columns="column", values="cell", aggfunc="first", sort=False)
    others = cells[cells["provider"] != cells["vs"]]
    ratio = others.pivot_table(index=keys, columns="column", values="ratio_cell", aggfunc="first", sort=False)
    table = latency.join(ratio.add_prefix("ratio "), how="left").fillna("")
    table.columns.name = None
    return table


if __name__ == "__main__":
    sys.exit(main())
