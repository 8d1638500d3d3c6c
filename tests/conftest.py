"""Shared fixtures: the golden wire examples and the bundled plugins, built once per session."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
PROBE_SOURCE = Path(__file__).parent / "plugins" / "probe.c"


@pytest.fixture(scope="session")
def golden() -> dict[str, dict]:
    """QueryMT's serde output for each wire type, by name (from the wire spec)."""
    entries = json.loads((FIXTURES / "querymt_wire_golden.json").read_text())
    return {entry["name"]: entry for entry in entries}


@pytest.fixture(scope="session")
def probe_builds() -> dict[str, Path]:
    """tests/plugins/probe.c built both ways, from the build cache (compiled once, not once per module)."""
    from querymt_jupyter.build import build_plugin

    return {kind: build_plugin(PROBE_SOURCE, kind) for kind in ("wasm", "native")}
