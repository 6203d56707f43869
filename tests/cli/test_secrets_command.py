"""``tollhouse secrets rotate``: old secrets stay readable, then move to the new key."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

from tests.cli.helpers import assert_ok

from tollhouse.crypto import SecretBox

OLD = "old-key-0123456789abcdefghijklmnopqrstuv"
NEW = "new-key-0123456789abcdefghijklmnopqrstuv"


def store_channel(db_path, token: str | None, channel_id: str) -> None:
    now = datetime.now(UTC).isoformat()
    with sqlite3.connect(db_path) as conn:
        conn.execute(
            "INSERT INTO notification_channels (id, name, type, config, secret, is_default,"
            " created_at, updated_at) VALUES (?, ?, 'webhook', '{}', ?, 0, ?, ?)",
            (channel_id, channel_id, token, now, now),
        )


def secret_of(db_path, channel_id: str) -> str | None:
    with sqlite3.connect(db_path) as conn:
        row = conn.execute(
            "SELECT secret FROM notification_channels WHERE id = ?", (channel_id,)
        ).fetchone()
    return row[0]


def test_rotate_re_encrypts_with_the_newest_key(invoke, db_path):
    assert_ok(invoke("db", "upgrade"))
    old = SecretBox([OLD])
    store_channel(db_path, old.encrypt("hook-secret"), "a")
    store_channel(db_path, None, "b")

    result = invoke("secrets", "rotate", env={"TOLLHOUSE_SECRET_KEY": f"{NEW},{OLD}"})

    assert_ok(result)
    assert result.output == "1 secret re-encrypted with the newest key\n"
    token = secret_of(db_path, "a")
    assert token is not None and SecretBox([NEW]).decrypt(token) == "hook-secret"
    assert secret_of(db_path, "b") is None


def test_rotate_without_a_key_or_with_a_wrong_one_says_why(invoke, db_path):
    assert_ok(invoke("db", "upgrade"))
    store_channel(db_path, SecretBox([OLD]).encrypt("s"), "a")
    missing = invoke("secrets", "rotate")
    assert missing.exit_code != 0 and "TOLLHOUSE_SECRET_KEY" in missing.output
    unrelated = "unrelated-0123456789abcdefghijklmnopqrst"
    wrong = invoke("secrets", "rotate", env={"TOLLHOUSE_SECRET_KEY": unrelated})
    assert wrong.exit_code != 0 and "cannot be decrypted" in wrong.output
    assert SecretBox([OLD]).decrypt(secret_of(db_path, "a") or "") == "s"  # untouched


def test_rotate_re_encrypts_sandbox_credentials(invoke, db_path):
    assert_ok(invoke("db", "upgrade"))
    now = datetime.now(UTC).isoformat()
    token = SecretBox([OLD]).encrypt('{"password": "p"}')
    with sqlite3.connect(db_path) as conn:
        conn.execute(
            "INSERT INTO sandboxes (id, name, backend, status, secret, created_at, updated_at)"
            " VALUES ('sbx_1', 'lab', 'static', 'available', ?, ?, ?)",
            (token, now, now),
        )
    result = invoke("secrets", "rotate", env={"TOLLHOUSE_SECRET_KEY": f"{NEW},{OLD}"})
    assert_ok(result)
    assert result.output == "1 secret re-encrypted with the newest key\n"
    with sqlite3.connect(db_path) as conn:
        (stored,) = conn.execute("SELECT secret FROM sandboxes").fetchone()
    assert SecretBox([NEW]).decrypt(stored) == '{"password": "p"}'
