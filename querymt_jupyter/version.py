"""The package's version: one place, read by pyproject.toml (hatch) and by the code that reports it."""

__version__ = "0.1.0"
