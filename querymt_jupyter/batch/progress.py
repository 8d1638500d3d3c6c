"""The live status of a batch: one bar of rows (done of total, rows/s and ETA by tqdm), with the rows
failed and the output tokens per second beside it. ``tqdm.auto`` draws a widget in a notebook and a
text line elsewhere."""

from __future__ import annotations

import time

from .store import RowResult

__all__ = ["Progress"]


class Progress:
    def __init__(self, total: int, resumed: int, label: str, enabled: bool = True) -> None:
        from tqdm.auto import tqdm  # here: tqdm.auto imports ipywidgets, which a bare import need not pay

        self.failed = 0
        self.tokens = 0
        self._started = time.perf_counter()
        self._bar = tqdm(total=total, initial=resumed, unit="row", desc=label, disable=not enabled, smoothing=0.1)
        if resumed:
            self._bar.set_postfix_str(f"{resumed} resumed from the store")

    def done(self, result: RowResult, rows: int = 1) -> None:
        """``result`` answered ``rows`` rows (rows with the same prompt share one request)."""
        self.failed += rows * (not result.ok)
        self.tokens += result.output_tokens or 0
        elapsed = max(time.perf_counter() - self._started, 1e-9)
        self._bar.set_postfix(failed=self.failed, tok_s=f"{self.tokens / elapsed:.0f}", refresh=False)
        self._bar.update(rows)

    def close(self) -> None:
        self._bar.close()
