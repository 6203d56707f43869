"""Webhook and Slack URLs are credentials (a Slack incoming-webhook URL is all it takes to
post to the channel): encrypted at rest with the ``SecretBox``, answered redacted.

A channel's ``config`` keeps the URL **redacted** — scheme and host, the rest masked
(``https://hooks.slack.com/***``) — for display, and ``url_secret`` holds the real URL as
a Fernet token. Like ``secret``, the URL is write-only: a merge update that does not send
it keeps the stored one, a new one replaces it.

Rows written in plaintext by an older version (``url_secret`` NULL, a real URL in
``config``) are encrypted lazily — a migration cannot reach ``TOLLHOUSE_SECRET_KEY`` —
whenever a process with the key starts its dispatcher (every ``serve`` and ``worker``),
lists or reads channels, or runs ``tollhouse secrets rotate``. Until then they are sent
from the plaintext and still answered redacted.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from tollhouse.alerts.models import notification_channels
from tollhouse.crypto import SecretBox
from tollhouse.errors import SecretUnreadable

FIELDS = {"webhook": "url", "slack": "webhook_url"}
MASK = "***"


def host_of(url: str) -> str | None:
    """The URL's host, or ``None`` when it has none, does not parse or has a bad port."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port out of range or not a number
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return None
    return parts.hostname or None


def redact(url: str) -> str:
    """Scheme and host (and port), the rest masked; no user info, path or query."""
    try:
        parts = urlsplit(url)
    except ValueError:  # unparseable (stored before URLs were checked): show nothing of it
        return f"/{MASK}"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"  # IPv6
    port = f":{parts.port}" if _port(parts) is not None else ""
    return f"{parts.scheme}://{host}{port}/{MASK}"


def _port(parts: Any) -> int | None:
    try:
        port: int | None = parts.port
    except ValueError:  # a port out of range: show none
        return None
    return port


def is_redacted(url: object) -> bool:
    return isinstance(url, str) and url.endswith(f"/{MASK}")


def seal(kind: str, config: dict[str, Any], box: SecretBox) -> tuple[dict[str, Any], str | None]:
    """``config`` with its URL redacted, and the URL's token (``None``: no URL in it)."""
    field = FIELDS.get(kind)
    url = config.get(field) if field else None
    if field is None or not isinstance(url, str) or is_redacted(url):
        return config, None
    return {**config, field: redact(url)}, box.encrypt(url)


def reveal(
    kind: str, config: dict[str, Any], token: str | None, box: SecretBox | None
) -> dict[str, Any]:
    """The config to send with: the real URL decrypted into it (legacy rows have it)."""
    field = FIELDS.get(kind)
    if field is None or token is None:
        return dict(config)
    if box is None:
        raise SecretUnreadable(
            "TOLLHOUSE_SECRET_KEY is not set: the channel's URL, stored encrypted, is unreadable"
        )
    return {**config, field: box.decrypt(token)}


async def seal_stored(conn: AsyncConnection, box: SecretBox) -> int:
    """Encrypt the URLs an older version stored in plaintext; returns how many."""
    c = notification_channels.c
    query = select(c.id, c.type, c.config).where(c.url_secret.is_(None), c.type.in_(tuple(FIELDS)))
    count = 0
    for row in (await conn.execute(query)).all():
        config, token = seal(row.type, dict(row.config or {}), box)
        if token is None:
            continue
        await conn.execute(
            update(notification_channels)
            .where(c.id == row.id, c.url_secret.is_(None))
            .values(config=config, url_secret=token)
        )
        count += 1
    return count
