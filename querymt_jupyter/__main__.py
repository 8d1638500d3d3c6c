"""``python -m querymt_jupyter``: command-line entry points.

    python -m querymt_jupyter run NOTEBOOK   execute a notebook in a real kernel, printing each cell's output
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def run_notebook(path: Path, timeout: int = 600) -> int:
    """Execute ``path`` top to bottom in a fresh kernel (cwd = its folder); print outputs per cell."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    notebook = nbformat.read(path, as_version=4)

    def show(cell: Any, cell_index: int, **_: Any) -> None:
        if cell.cell_type != "code":
            return
        print(f"In [{cell.get('execution_count') or cell_index}]: {cell.source}")
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            text = output.get("text") or data.get("text/markdown") or data.get("text/plain", "")
            if text:
                print(text if text.endswith("\n") else text + "\n", end="")
        print()

    client = NotebookClient(
        notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    client.on_cell_executed = show
    try:
        client.execute()
    except CellExecutionError as error:
        print(error, file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m querymt_jupyter")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="execute a notebook in a real kernel and print its outputs")
    run.add_argument("notebook", type=Path)
    args = parser.parse_args(argv)
    return run_notebook(args.notebook)


if __name__ == "__main__":
    sys.exit(main())
