"""The JupyterLab extension's build and its TypeScript checks (labextension/), run from pytest.

The TypeScript unit tests (vitest), Prettier and ESLint run with the node_modules the package build
installed; the browser test (test_lab_browser.py) covers what needs a page.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import querymt_jupyter
from querymt_jupyter.answer import FORMATS

ROOT = Path(__file__).resolve().parents[1]
LABEXTENSION = ROOT / "labextension"
PACKAGE = json.loads((LABEXTENSION / "package.json").read_text())

needs_node_modules = pytest.mark.skipif(
    not (LABEXTENSION / "node_modules").is_dir(), reason="labextension/node_modules is missing: run make install"
)


def _jlpm(*args: str) -> subprocess.CompletedProcess[str]:
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "FORCE_COLOR": "0"}
    return subprocess.run(
        [str(bin_dir / "jlpm"), *args],
        check=False,
        cwd=LABEXTENSION,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_versions_match() -> None:
    assert PACKAGE["version"] == querymt_jupyter.__version__


def test_the_build_is_where_jupyterlab_looks() -> None:
    [paths] = querymt_jupyter._jupyter_labextension_paths()
    assert paths["dest"] == PACKAGE["name"] == "querymt-jupyter"
    built = Path(querymt_jupyter.__file__).parent / paths["src"]
    assert (LABEXTENSION / PACKAGE["jupyterlab"]["outputDir"]).resolve() == built.resolve()
    manifest = json.loads((built / "package.json").read_text())
    assert manifest["name"] == "querymt-jupyter"
    assert (built / "static" / "style.js").is_file()
    assert {p.name for p in (built / "schemas" / "querymt-jupyter").glob("*.json")} >= {"plugin.json", "settings.json"}


def test_settings_schema_offers_the_kernels_formats() -> None:
    schema = json.loads((LABEXTENSION / "schema" / "settings.json").read_text())
    assert schema["properties"]["outputFormat"]["enum"] == list(FORMATS)
    assert schema["properties"]["outputFormat"]["default"] == "markdown"


@needs_node_modules
def test_typescript_unit_tests() -> None:
    run = _jlpm("test")
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert " passed" in run.stdout


@needs_node_modules
def test_typescript_lint_and_format() -> None:
    run = _jlpm("lint:check")
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
