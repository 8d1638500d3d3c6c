"""Editing a plugins.toml / .json / .yaml in place, keeping every byte the edit does not touch.

The config widget is a thin face on this package; everything here works without ipywidgets.

``ConfigDocument`` (document.py) holds the file's text. Each edit (``set_field``, ``rename``, ``move``,
``add``, ``remove``, ``set_oci``) rewrites only the span of text it concerns and is then **checked**: the
new text is parsed with the same parser ``config.py`` uses and must equal the old data with exactly that
change. An edit that cannot be made that way raises ``ConfigEditError`` and leaves the document as it
was, so a file is refused rather than corrupted. One editor per format, behind one interface
(editor.py: ``Editor``):

- TOML (toml_editor.py): tomlkit, which keeps comments, blank lines, key order and formatting. Comments
  written above a ``[[providers]]`` header are moved onto that table first, so they travel with it on
  move and remove.
- JSON (json_editor.py): spans from a small position-recording parser; new members copy the file's
  indentation, key separator and comma style.
- YAML (yaml_editor.py): spans from PyYAML's composer (node marks). Block and flow collections, comments
  and quoting styles are kept. Files with anchors or aliases are refused (an edit through an alias would
  change other places), as are edits of ``|``/``>`` block scalars.

A provider owns the comment lines directly above it: they move and go away with it, while blank lines
stay where they were (a comment block that opens the file is the file's). Secrets never enter the file
(checks.py): ``set_secret`` writes ``${VAR}`` and ``save`` exports the value to ``os.environ`` for this
kernel.
"""

from .checks import check_hosts, is_secret, secret_env_var
from .document import ConfigDocument, ConfigEditError, FieldError, ProviderRecord, plain_message, source_label

__all__ = [
    "ConfigDocument",
    "ConfigEditError",
    "FieldError",
    "ProviderRecord",
    "check_hosts",
    "is_secret",
    "plain_message",
    "secret_env_var",
    "source_label",
]
