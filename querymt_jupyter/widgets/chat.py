"""``ChatWidget``: a small chat UI in a cell (``%querymt chat NAME``).

It talks through the session's named conversation, the one ``%%querymt NAME --chat CONVERSATION`` uses:
the history sent with each prompt is ``Conversation.messages()``, and each answered turn is recorded
under its own key (``widget:<n>``), so cells and the widget can share a conversation. Calls are tagged
``source="widget"`` for the prompt log. The reply streams into its own HTML as chunks arrive; a failure
is shown in the widget (a button handler's exception would otherwise only reach the kernel's log).
"""

from __future__ import annotations

import html
import itertools
from typing import TYPE_CHECKING

import ipywidgets as w

from ..conversation import Conversation
from ..errors import NotImplementedByPluginError
from ..provider import call_context
from ..session import current

if TYPE_CHECKING:
    from ..session import Session

__all__ = ["ChatWidget"]

_turns = itertools.count(1)  # one counter for every widget: two widgets on one conversation never share a key
_DEFAULT = ""  # the model picker's value for "the provider's configured or default model"

_BUBBLE = (
    '<div style="margin:4px 0;padding:6px 10px;border-radius:8px;white-space:pre-wrap;background:{bg}">'
    '<b style="color:#555">{who}</b><br>{text}</div>'
)


def _bubble(who: str, text: str, *, user: bool) -> str:
    return _BUBBLE.format(bg="#e3f2fd" if user else "#f5f5f5", who=html.escape(who), text=html.escape(text))


class ChatWidget(w.VBox):
    """History, input (Enter or Send), streamed reply, model picker and Clear, on one provider.

    ``name`` is the provider (default: the session's default provider); ``conversation`` the conversation's
    name (default: the provider's name).
    """

    def __init__(self, name: str | None = None, session: Session | None = None, conversation: str | None = None) -> None:
        if session is None:
            session = current()
        self.session = session
        self.provider_name = name or session.default_provider
        self.conversation_name = conversation or self.provider_name
        self.history = w.HTML()
        self.reply = w.HTML()  # the answer being streamed; emptied once it joins the history
        self.error = w.HTML()
        self.model = w.Dropdown(description="model", layout=w.Layout(width="20em"))
        self.models_error = w.HTML()
        self.input = w.Text(placeholder="Message — Enter to send", layout=w.Layout(flex="1"))
        self.send_button = w.Button(description="Send", icon="paper-plane", button_style="primary")
        self.clear_button = w.Button(description="Clear", icon="eraser")
        self.send_button.on_click(lambda _: self.send())
        self.clear_button.on_click(lambda _: self.clear())
        # The Text view sends {"event": "submit"} on Enter; on_submit is deprecated, the message is not.
        self.input.on_msg(lambda _, content, __: self.send() if content.get("event") == "submit" else None)
        title = w.HTML(f"<b>{html.escape(self.provider_name)}</b> · conversation "
                       f"<code>{html.escape(self.conversation_name)}</code>")
        super().__init__([
            w.HBox([title, self.model, self.clear_button, self.models_error]),
            self.history,
            self.reply,
            self.error,
            w.HBox([self.input, self.send_button]),
        ])
        self.refresh_models()
        self.show_history()

    @property
    def conversation(self) -> Conversation:
        return self.session.conversation(self.conversation_name)

    # -- models

    def refresh_models(self) -> None:
        """Fill the picker from the provider's ``list_models``; on failure offer only the default and say why."""
        configured: str | None = None
        models: list[str] = []
        try:
            provider = self.session.provider(self.provider_name)  # with the session's default model, if any
            configured = provider.model
            models = [str(m) for m in provider.list_models()]
            self.models_error.value = ""
        except Exception as error:  # noqa: BLE001 - any failure: the picker must still work
            self.models_error.value = (
                f'<span style="color:#c62828">models unavailable: {html.escape(f"{type(error).__name__}: {error}")}</span>'
            )
        label = f"(default: {configured})" if configured else "(default)"
        # "(default)" rather than the same model picked by name: the call then shares the session's
        # provider with %%querymt cells instead of building a second one.
        self.model.options = [(label, _DEFAULT)] + [(m, m) for m in models]
        self.model.value = _DEFAULT

    # -- chatting

    def send(self, text: str | None = None) -> str | None:
        """Send ``text`` (default: the input box); stream the reply; return it, or None after an error."""
        prompt = self.input.value if text is None else text
        if not prompt.strip() or self.send_button.disabled:
            return None
        self.input.value = ""
        self.error.value = ""
        self.send_button.disabled = True
        key = f"widget:{next(_turns)}"
        messages = [*self.conversation.messages(), {"role": "user", "content": prompt}]
        pieces: list[str] = []
        self._show_reply(prompt, pieces)
        try:
            provider = self.session.provider(self.provider_name, self.model.value or None)
            with call_context(source="widget", conversation=self.conversation_name):
                try:
                    chunks = provider.chat_stream(messages) if self.session.stream else None
                except NotImplementedByPluginError:
                    chunks = None  # the plugin does not stream: one reply, shown whole
                if chunks is None:
                    pieces.append(provider.chat(messages).text or "")
                    self._show_reply(prompt, pieces)
                else:
                    for chunk in chunks:
                        if chunk.text:
                            pieces.append(chunk.text)
                            self._show_reply(prompt, pieces)
        except Exception as error:  # noqa: BLE001 - shown in the widget; the prompt goes back into the box
            self.error.value = f'<pre style="color:#c62828;white-space:pre-wrap">{html.escape(f"{type(error).__name__}: {error}")}</pre>'
            self.reply.value = ""
            self.input.value = prompt
            return None
        finally:
            self.send_button.disabled = False
        answer = "".join(pieces)
        self.conversation.record(key, prompt, answer)
        self.reply.value = ""
        self.show_history()
        return answer

    def _show_reply(self, prompt: str, pieces: list[str]) -> None:
        self.reply.value = _bubble("you", prompt, user=True) + _bubble(self.provider_name, "".join(pieces) + " ▍", user=False)

    def show_history(self) -> None:
        """Render the conversation (turns from cells included) as it is now."""
        turns = [
            _bubble("you", ex.prompt, user=True) + _bubble(self.provider_name, ex.answer, user=False)
            for ex in self.conversation.exchanges
        ]
        self.history.value = "".join(turns) or '<i style="color:#888">no messages yet</i>'

    def clear(self) -> None:
        """Forget the conversation (for ``--chat`` cells too: it is the same one)."""
        self.conversation.reset()
        self.error.value = self.reply.value = ""
        self.show_history()
