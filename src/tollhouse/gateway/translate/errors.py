"""The one exception the translation layer raises.

Anything that cannot be carried from one wire format to the other raises
`TranslationError`, whose message names the offending field by its JSON path
(``messages[2].content[0].type``) so a client can fix its request without
reading our source. It subclasses `ValueError` because it is always a
problem with a value handed in, never with the gateway itself.
"""

from __future__ import annotations

__all__ = ["TranslationError"]


class TranslationError(ValueError):
    """A request or response cannot be expressed in the other wire format.

    Raised while translating a client request, it is the client's fault (a 400).
    Raised while translating an upstream response or stream, it means the
    provider produced something we cannot represent; the caller decides the
    status (502 fits) since the client did nothing wrong.
    """
