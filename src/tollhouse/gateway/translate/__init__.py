"""Pure translation between the OpenAI Chat Completions and Anthropic Messages wire formats.

The gateway speaks both formats to clients and to providers; this package lets
any client format reach any provider format. Everything here is a function of
parsed JSON (``dict``) values, with no I/O, so each direction is tested
against the official SDK types without a network:

====================================  =========================================
client -> provider request            provider -> client response / stream
====================================  =========================================
`chat_request_to_messages`            `messages_response_to_chat`,
                                      `MessagesStreamToChat`
`messages_request_to_chat`            `chat_response_to_messages`,
                                      `ChatStreamToMessages`
====================================  =========================================

Token counts from either side normalise to `Usage`. Input that cannot be
expressed in the other format raises `TranslationError`, naming the field.
"""

from __future__ import annotations

from .chat_request import messages_request_to_chat
from .chat_stream import MessagesStreamToChat
from .errors import TranslationError
from .messages_request import chat_request_to_messages
from .messages_stream import ChatStreamToMessages
from .responses import chat_response_to_messages, messages_response_to_chat
from .usage import Usage, usage_from_chat, usage_from_messages

__all__ = [
    "ChatStreamToMessages",
    "MessagesStreamToChat",
    "TranslationError",
    "Usage",
    "chat_request_to_messages",
    "chat_response_to_messages",
    "messages_request_to_chat",
    "messages_response_to_chat",
    "usage_from_chat",
    "usage_from_messages",
]
