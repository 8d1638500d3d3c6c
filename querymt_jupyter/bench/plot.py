"""The benchmark's figure: latency against payload size, the spread per operation, throughput by threads.

Drawn on a bare ``matplotlib.figure.Figure`` (no pyplot): nothing global changes, no window opens, and
the figure renders the same in a notebook, a PNG or a terminal session.
"""

from __future__ import annotations

import itertools

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

__all__ = ["figure"]

_COLORS = {"native": "tab:blue", "wasm": "tab:orange"}
_OTHER_COLORS = ["tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive"]
_STYLES = ["-", "--", ":", "-."]


def figure(summary: pd.DataFrame, samples: pd.DataFrame) -> Figure:
    """One panel per view the data supports (the spread per operation is always there)."""
    single = summary[summary["threads"] == 1]
    scaling = single.groupby("op").filter(lambda rows: rows["size"].nunique() > 1)
    scaling = scaling[~scaling["op"].str.startswith("dispatch/")]
    http = summary[summary["op"] == "http-chat"]
    concurrent = http[http["size"] == http["size"].min()] if http["threads"].nunique() > 1 else http.iloc[:0]
    panels = [(_scaling, scaling)] if not scaling.empty else []
    panels.append((_spread, samples))
    if not concurrent.empty:
        panels.append((_throughput, concurrent))
    fig = Figure(figsize=(5.5 * len(panels), 4.2), layout="constrained")
    colors = _colors(summary)
    for ax, (draw, data) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels):
        draw(ax, data, colors)
    return fig


def _colors(summary: pd.DataFrame) -> dict[str, str]:
    """Blue for native, orange for Wasm, unless two providers of one type meet in an operation."""
    providers = summary.drop_duplicates("provider")
    per_type = summary.groupby(["op", "plugin_type"])["provider"].nunique()
    if (per_type <= 1).all() and set(providers["plugin_type"]) <= set(_COLORS):
        return {p: _COLORS[kind] for p, kind in zip(providers["provider"], providers["plugin_type"])}
    return dict(zip(providers["provider"], itertools.cycle([*_COLORS.values(), *_OTHER_COLORS])))


def _scaling(ax: Axes, summary: pd.DataFrame, colors: dict[str, str]) -> None:
    """Median latency against payload size, log-log, one line per provider and operation (p5-p95 band)."""
    for (op, provider), rows in summary.groupby(["op", "provider"], sort=False):
        rows = rows.sort_values("size")
        style = _STYLES[list(summary["op"].unique()).index(op) % len(_STYLES)]
        ax.plot(rows["size"], rows["median"], style, marker="o", color=colors[provider], label=f"{provider} · {op}")
        ax.fill_between(rows["size"], rows["p5"], rows["p95"], color=colors[provider], alpha=0.15)
    ax.set(
        xscale="log", yscale="log", xlabel="payload (bytes)", ylabel="latency per call (µs)", title="Latency vs payload"
    )
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize="small")


def _spread(ax: Axes, samples: pd.DataFrame, colors: dict[str, str]) -> None:
    """A box per operation and provider (5th-95th percentile whiskers), at each operation's smallest size."""
    single = samples[samples["threads"] == 1]
    smallest = single[single["size"] == single.groupby("op")["size"].transform("min")]
    ops = list(smallest["op"].unique())
    providers = list(smallest["provider"].unique())
    width = 0.8 / len(providers)
    for k, provider in enumerate(providers):
        rows = smallest[smallest["provider"] == provider]
        data = [rows.loc[rows["op"] == op, "us"].to_numpy() for op in ops]
        positions = [i + (k - (len(providers) - 1) / 2) * width for i in range(len(ops))]
        kept = [(p, d) for p, d in zip(positions, data) if len(d)]
        boxes = ax.boxplot(
            [d for _, d in kept],
            positions=[p for p, _ in kept],
            widths=width * 0.9,
            whis=(5, 95),
            showfliers=False,
            patch_artist=True,
            manage_ticks=False,
        )
        for box in boxes["boxes"]:
            box.set(facecolor=colors[provider], alpha=0.6)
        ax.plot([], [], "s", color=colors[provider], label=provider)
    ax.set_xticks(range(len(ops)), ops, rotation=30, ha="right", fontsize="small")
    ax.set(yscale="log", ylabel="latency per call (µs)", title="Spread per operation (smallest payload)")
    ax.grid(True, axis="y", which="major", alpha=0.3)
    ax.legend(fontsize="small")


def _throughput(ax: Axes, summary: pd.DataFrame, colors: dict[str, str]) -> None:
    """http-chat calls per second against the number of threads calling one provider."""
    for provider, rows in summary.groupby("provider", sort=False):
        rows = rows.sort_values("threads")
        ax.plot(rows["threads"], rows["ops/s"], marker="o", color=colors[provider], label=provider)
    ax.set(xlabel="threads", ylabel="calls per second", title="http-chat throughput vs threads")
    ax.set_xticks(sorted(summary["threads"].unique()))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
