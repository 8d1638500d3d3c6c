"""``BenchResult``: the summary and per-call samples of a run, its metadata, and its views."""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from .plot import figure

__all__ = ["BenchResult"]

_LAYERS = ("dispatch/raw", "dispatch/factory.call", "dispatch/provider.chat")


@dataclass
class BenchResult:
    """What ``querymt_jupyter.bench.run`` measured.

    ``summary``: one row per provider × op × size × threads — n, then median, mean, std, p5, p95, p99
    and min in µs, ops/s, tokens/s (op ``complete``), and ``ratio`` (median over the median of ``vs``, the group's baseline) with
    its 95% bootstrap interval ``ratio_lo``..``ratio_hi``. ``samples``: one row per timed call
    (``ns`` as measured, ``us`` the same in µs, ``round`` of the interleaving). ``metadata``: machine,
    versions, date and method.
    """

    summary: pd.DataFrame
    samples: pd.DataFrame
    metadata: dict[str, Any]
    show_plot: bool = True  # the notebook view draws the figure under the table

    @property
    def overhead(self) -> pd.DataFrame:
        """The host's cost over the raw runtime call (the ``dispatch`` op), per provider and size (µs)."""
        rows = self.summary[self.summary["op"].isin(_LAYERS)]
        if rows.empty:
            return pd.DataFrame()
        table = rows.pivot_table(index=["provider", "plugin_type", "size"], columns="op", values="median", sort=False)
        table = table.rename(columns=lambda op: op.removeprefix("dispatch/"))[
            [layer.removeprefix("dispatch/") for layer in _LAYERS]
        ]
        for layer in ("factory.call", "provider.chat"):
            table[f"{layer} +µs"] = table[layer] - table["raw"]
            table[f"{layer} +%"] = 100 * (table[layer] / table["raw"] - 1)
        table.columns.name = None
        return table

    @property
    def throughput(self) -> pd.DataFrame:
        """http-chat calls per second by thread count, and the speed-up over one thread."""
        rows = self.summary[self.summary["op"] == "http-chat"]
        rows = rows[rows["size"] == rows["size"].min()]
        table = rows.pivot_table(index="threads", columns="provider", values="ops/s", sort=False)
        table.columns.name = None
        return pd.concat([table, (table / table.iloc[0]).add_suffix(" speed-up")], axis=1) if len(table) else table

    @property
    def tokens_per_second(self) -> pd.DataFrame:
        """complete: tokens generated per second per provider (the summary's ``tokens/s``: size over the mean
        call), and the median time ratio to the group's baseline (Wasm/native: how many times slower)."""
        rows = self.summary[self.summary["op"] == "complete"]
        if rows.empty:
            return pd.DataFrame()
        return pd.DataFrame(
            {
                "provider": rows["provider"],
                "plugin_type": rows["plugin_type"],
                "tokens": rows["size"],
                "tokens/s": rows["tokens/s"],
                "time ratio": rows["ratio"],
                "vs": rows["vs"],
            }
        ).reset_index(drop=True)

    def plot(self) -> Figure:
        """Latency against payload size (log-log), the spread per operation, throughput by threads."""
        return figure(self.summary, self.samples)

    def _repr_html_(self) -> str:
        parts = [f"<p><b>querymt benchmark</b> · {html.escape(self._provenance())}</p>", self._table_html()]
        if self.show_plot:
            image = base64.b64encode(self.png()).decode()
            parts.append(f'<img src="data:image/png;base64,{image}" alt="benchmark plot"/>')
        return "\n".join(parts)

    def __repr__(self) -> str:
        return (
            f"<BenchResult {self._provenance()}>\n{self.summary.to_string(index=False, float_format='{:,.2f}'.format)}"
        )

    def _provenance(self) -> str:
        meta = self.metadata
        machine = meta.get("machine", {})
        return f"{meta.get('date', '')}, {machine.get('cpu', '?')} × {machine.get('cpus', '?')}, {meta.get('python', '')}, extism {meta.get('extism', '?')}"

    def _table_html(self) -> str:
        return self.summary.to_html(index=False, float_format="{:,.2f}".format, classes="querymt-bench")

    def png(self) -> bytes:
        """The plot as PNG bytes."""
        buffer = io.BytesIO()
        self.plot().savefig(buffer, format="png", dpi=90)
        return buffer.getvalue()
