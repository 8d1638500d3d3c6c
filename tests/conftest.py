"""Shared fixtures: the golden wire examples and the bundled plugins, built once per session."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def golden() -> dict[str, dict]:
    """QueryMT's serde output for each wire type, by name (from the wire spec)."""
    entries = json.loads((FIXTURES / "querymt_wire_golden.json").read_text())
    return {entry["name"]: entry for entry in entries}
