"""From per-call samples to the summary: percentiles per subject, and each one's ratio to a baseline.

The ratio compares medians within one group (the same operation, payload size and thread count). The
baseline is the first native provider when both plugin types are present (so the ratio reads "Wasm
costs N× native"), else the first provider. Its 95% confidence interval is a percentile bootstrap:
both sample sets resampled with replacement, the ratio of the resampled medians, 1000 times.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = ["KEYS", "STAT_COLUMNS", "summarize"]

KEYS = ["provider", "plugin_type", "op", "size", "threads"]
STAT_COLUMNS = [
    "n", "median", "mean", "std", "p5", "p95", "p99", "min", "ops/s", "tokens/s", "ratio", "ratio_lo", "ratio_hi", "vs"
]
BOOTSTRAP = 1000


def summarize(samples: pd.DataFrame) -> pd.DataFrame:
    """One row per provider × op × size × threads, times in µs, in the order the samples came."""
    rows = [_row(key, group["us"].to_numpy()) for key, group in samples.groupby(KEYS, sort=False)]
    summary = pd.DataFrame(rows, columns=KEYS + STAT_COLUMNS[:9])
    # A complete call generates `size` tokens (the rest of a call is a few µs of encoding the request).
    summary["tokens/s"] = summary["ops/s"].where(summary["op"] == "complete") * summary["size"]
    ratios = [
        _ratios(summary.loc[index], samples)
        for index in summary.groupby(["op", "size", "threads"], sort=False).groups.values()
    ]
    summary = summary.join(pd.concat(ratios)) if ratios else summary.assign(ratio=[], ratio_lo=[], ratio_hi=[], vs=[])
    return summary[KEYS + STAT_COLUMNS]


def _row(key: tuple, us: np.ndarray) -> list:
    p5, median, p95, p99 = np.percentile(us, [5, 50, 95, 99])
    mean = us.mean()
    threads = key[-1]
    std = us.std(ddof=1) if len(us) > 1 else 0.0
    # A closed loop of `threads` callers, each waiting `mean` per call, completes threads/mean calls per µs.
    return [*key, len(us), median, mean, std, p5, p95, p99, us.min(), threads * 1e6 / mean]


def _ratios(group: pd.DataFrame, samples: pd.DataFrame) -> pd.DataFrame:
    """ratio, ratio_lo, ratio_hi and vs for the rows of one comparison group."""
    base = _baseline(group["plugin_type"].tolist())
    base_row = group.iloc[base]
    base_us = _us(samples, base_row)
    rng = np.random.default_rng(0)  # a fixed seed: the same samples always give the same interval
    base_medians = _resampled_medians(base_us, rng)
    out = []
    for position, (_, row) in enumerate(group.iterrows()):
        if position == base:
            out.append((1.0, 1.0, 1.0))
            continue
        ratios = _resampled_medians(_us(samples, row), rng) / base_medians
        lo, hi = np.percentile(ratios, [2.5, 97.5])
        out.append((row["median"] / base_row["median"], lo, hi))
    frame = pd.DataFrame(out, columns=["ratio", "ratio_lo", "ratio_hi"], index=group.index)
    frame["vs"] = base_row["provider"]
    return frame


def _baseline(plugin_types: Sequence[str]) -> int:
    if "native" in plugin_types and "wasm" in plugin_types:
        return plugin_types.index("native")
    return 0


def _us(samples: pd.DataFrame, row: pd.Series) -> np.ndarray:
    match = np.logical_and.reduce([samples[k] == row[k] for k in KEYS])
    return samples.loc[match, "us"].to_numpy()


def _resampled_medians(us: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    picks = rng.integers(0, len(us), size=(BOOTSTRAP, len(us)))
    return np.median(us[picks], axis=1)
