"""Broker tokens: what a track presents to lease a sandbox, separate from the admin key
(docs/sandboxes.md, *Tokens*).

A token is ``tbk-`` and 40 URL-safe random characters (240 bits), shown once and stored
as its SHA-256, so a lookup needs no salt or slow KDF. Every replica keeps the live
tokens in memory, reloaded with the governance snapshot (a write bumps its version), so
checking one costs a hash and a dictionary lookup, and a revoked token stops working at
once on the replica that revoked it and within one poll interval on the others. The
bearer value is compared with ``hmac.compare_digest`` against the stored hash it found.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from tollhouse.errors import AuthenticationFailed, Conflict, NotFound
from tollhouse.governance.service import bump_version
from tollhouse.sandboxes.models import broker_tokens

PREFIX = "tbk-"
_t = broker_tokens.c


@dataclass(frozen=True, slots=True)
class Token:
    id: str
    name: str
    tags: tuple[str, ...]
    token_hash: str


def generate() -> tuple[str, str, str]:
    """A new token as ``(value, hash, hint)``; only the hash and hint are stored."""
    value = PREFIX + secrets.token_urlsafe(30)
    return value, digest(value), f"{value[:8]}…{value[-4:]}"


def digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "replace")).hexdigest()


class TokenSet:
    """The live tokens by hash, as loaded last."""

    def __init__(self) -> None:
        self._by_hash: dict[str, Token] = {}

    async def reload(self, conn: AsyncConnection) -> None:
        rows = (await conn.execute(select(broker_tokens).where(_t.revoked_at.is_(None)))).all()
        self._by_hash = {
            row.token_hash: Token(row.id, row.name, tuple(row.tags or ()), row.token_hash)
            for row in rows
        }

    def check(self, authorization: str | None) -> Token:
        """The token a ``Bearer`` header carries, or a 401."""
        scheme, _, value = (authorization or "").partition(" ")
        value = value.strip()
        if scheme.lower() != "bearer" or not value:
            raise AuthenticationFailed(
                "a broker token is required: Authorization: Bearer tbk-…", headers=_CHALLENGE
            )
        hashed = digest(value)
        found = self._by_hash.get(hashed)
        if found is None or not hmac.compare_digest(found.token_hash, hashed):
            raise AuthenticationFailed("unknown or revoked broker token", headers=_CHALLENGE)
        return found


_CHALLENGE = {"www-authenticate": 'Bearer realm="tollhouse-sandboxes"'}


async def create(
    conn: AsyncConnection, name: str, tags: Sequence[str], now: datetime
) -> tuple[Any, str]:
    """A new token's row and its value (shown this once)."""
    value, hashed, hint = generate()
    token_id = f"btk_{uuid.uuid4().hex}"
    await bump_version(conn)
    try:
        async with conn.begin_nested():
            await conn.execute(
                broker_tokens.insert().values(
                    id=token_id,
                    name=name,
                    token_hash=hashed,
                    hint=hint,
                    tags=list(tags),
                    created_at=now,
                )
            )
    except IntegrityError:
        raise Conflict(f"a broker token named {name!r} exists already") from None
    return await get(conn, token_id), value


async def get(conn: AsyncConnection, token_id: str) -> Any:
    row = (await conn.execute(select(broker_tokens).where(_t.id == token_id))).one_or_none()
    if row is None:
        raise NotFound(f"broker token {token_id!r} not found")
    return row


async def listing(conn: AsyncConnection) -> Sequence[Any]:
    return (await conn.execute(select(broker_tokens).order_by(_t.created_at, _t.id))).all()


async def revoke(conn: AsyncConnection, token_id: str, now: datetime) -> Any:
    row = await get(conn, token_id)
    if row.revoked_at is None:
        await bump_version(conn)
        await conn.execute(update(broker_tokens).where(_t.id == token_id).values(revoked_at=now))
    return await get(conn, token_id)
