"""URLs in settings: database URLs on their async driver, passwords hidden in anything
shown, and the entries of ``trusted_proxies``."""

from __future__ import annotations

# The database URL schemes accepted (the async forms and the plain ones other tools and
# hosting platforms write) and the async driver each one runs on.
DATABASE_SCHEMES: dict[str, str] = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}


def async_database_url(url: str) -> str:
    """``url`` on its async driver: the one place a database URL's scheme is read.

    ``sqlite:///tollhouse.db`` -> ``sqlite+aiosqlite:///tollhouse.db`` (relative to the
    working directory; ``sqlite:////var/lib/x.db`` is absolute),
    ``postgres://u:p@db/x`` -> ``postgresql+asyncpg://u:p@db/x``; the async forms are
    returned unchanged. Any other scheme raises ``ValueError`` naming the accepted ones
    (``Settings`` turns it into a ``ConfigError`` at start-up), with the password hidden.
    """
    scheme, sep, rest = url.partition("://")
    driver = DATABASE_SCHEMES.get(scheme.lower()) if sep else None
    if driver is None:
        accepted = ", ".join(f"{name}://" for name in DATABASE_SCHEMES)
        raise ValueError(
            f"unsupported database_url {redact_url(url)!r}: accepted schemes are {accepted} "
            "(sqlite:///PATH or postgresql://USER:PASS@HOST/DB)"
        )
    return f"{driver}://{rest}"


def proxy_list(value: str) -> list[str]:
    """The entries of ``trusted_proxies``."""
    return [part.strip() for part in value.split(",") if part.strip()]


def redact_url(url: str) -> str:
    """``url`` with any password replaced: ``postgresql://u:***@host/db``."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in credentials:
        return url
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"
