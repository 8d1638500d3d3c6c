"""The notebook widgets: ``ConfigWidget`` (``%querymt config``) and ``ChatWidget`` (``%querymt chat``).

Imported only when a widget is asked for, so ``%load_ext querymt_jupyter`` does not pay for ipywidgets.
"""

from .chat import ChatWidget
from .config import ConfigWidget

__all__ = ["ChatWidget", "ConfigWidget"]
