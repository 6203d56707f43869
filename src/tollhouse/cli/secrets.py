"""``tollhouse secrets rotate``: re-encrypts every stored channel secret and channel URL,
and every static sandbox's credentials, with the first key of ``TOLLHOUSE_SECRET_KEY``
(older keys, listed after it, still decrypt; so do tokens of the old SHA-256 key
derivation, which move to HKDF), and encrypts URLs an older version stored in plaintext,
in one transaction: after it, the old keys can be removed from the setting.
"""

from __future__ import annotations

import click
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from tollhouse.alerts import urls
from tollhouse.alerts.models import notification_channels
from tollhouse.cli.db import on_database
from tollhouse.cli.options import config_option, settings_from
from tollhouse.crypto import SecretBox
from tollhouse.errors import SecretUnreadable
from tollhouse.sandboxes import pool


def _box(config_file: str | None) -> SecretBox:
    settings = settings_from(config_file)
    secret = settings.secret_key.get_secret_value() if settings.secret_key else None
    box = SecretBox.from_setting(secret)
    if box is None:
        raise click.ClickException("TOLLHOUSE_SECRET_KEY is not set: nothing to rotate with")
    return box


@click.group()
def secrets() -> None:
    """Secrets stored encrypted (channel secrets, SMTP passwords, sandbox credentials)."""


@secrets.command()
@config_option
def rotate(config_file: str | None) -> None:
    """Re-encrypt every stored secret with the newest key of TOLLHOUSE_SECRET_KEY."""
    box = _box(config_file)

    async def action(engine: AsyncEngine) -> int:
        table = notification_channels
        async with engine.begin() as conn:
            count = await urls.seal_stored(conn, box)
            rows = (
                await conn.execute(select(table.c.id, table.c.secret, table.c.url_secret))
            ).all()
            for row in rows:
                values = {
                    name: box.rotate(token)
                    for name, token in (("secret", row.secret), ("url_secret", row.url_secret))
                    if token is not None
                }
                if values:
                    await conn.execute(update(table).where(table.c.id == row.id).values(**values))
                    count += len(values)
            count += await pool.rotate_secrets(conn, box)
        return count

    try:
        count = on_database(config_file, action)
    except SecretUnreadable as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"{count} secret{'s' if count != 1 else ''} re-encrypted with the newest key")
