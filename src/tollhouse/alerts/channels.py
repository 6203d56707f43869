"""Channels: how an alert leaves — a signed webhook, a Slack message, an email.

A channel is ``{name, type, config, secret}``:

- ``webhook``: ``config.url``; the body is the event payload, signed with ``secret``
  (``Tollhouse-Signature``) and named by ``Tollhouse-Event-Id`` for receiver dedup;
- ``slack``: ``config.webhook_url`` (an incoming webhook); formatted blocks;
- ``email``: ``config`` ``host``, ``port``, ``starttls`` or ``tls``, ``username``,
  ``allow_plaintext_auth``, ``from``, ``to`` (list); ``secret`` is the SMTP password;
  text and HTML bodies. With a ``username`` the connection is encrypted — implicit TLS
  with ``tls``, else STARTTLS whatever ``starttls`` says — and a server that does not
  offer STARTTLS fails the send before AUTH, unless the channel sets
  ``allow_plaintext_auth: true`` (a relay on a trusted network that has no TLS).

A channel missing what it needs to send (an email channel without ``host``) is not an
error: it logs a preview of what it would have sent, and the delivery counts as done.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import ssl
import time
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import aiohttp
import orjson

from tollhouse.alerts.events import encode
from tollhouse.alerts.signing import EVENT_ID_HEADER, HEADER, sign
from tollhouse.alerts.templates import render_email, render_slack

log = logging.getLogger("tollhouse.alerts")

TYPES = ("email", "slack", "webhook")


class PlaintextRefused(smtplib.SMTPException):
    """Credentials would cross an unencrypted connection, and the channel did not opt in."""


@dataclass(frozen=True, slots=True)
class Channel:
    id: str
    name: str
    type: str
    config: dict[str, Any]
    secret: str | None  # decrypted, in memory only


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    status_code: int | None = None
    error: str | None = None
    preview: bool = False


def missing(channel: Channel) -> list[str]:
    """What the channel lacks to really send (empty: it can)."""
    config = channel.config
    if channel.type == "webhook":
        return [] if config.get("url") else ["url"]
    if channel.type == "slack":
        return [] if config.get("webhook_url") else ["webhook_url"]
    return [name for name in ("host", "from", "to") if not config.get(name)]


async def send(
    channel: Channel,
    payload: dict[str, Any],
    session: aiohttp.ClientSession,
    timeout_s: float,
) -> Outcome:
    """Send one event through one channel; never raises."""
    lacking = missing(channel)
    if lacking:
        log.warning(
            "alert channel not configured; preview of what it would send",
            extra={
                "channel": channel.name,
                "missing": lacking,
                "preview": _preview(channel, payload),
            },
        )
        return Outcome(ok=True, preview=True)
    try:
        if channel.type == "webhook":
            return await _webhook(channel, payload, session, timeout_s)
        if channel.type == "slack":
            return await _slack(channel, payload, session, timeout_s)
        async with asyncio.timeout(timeout_s + 1):
            return await asyncio.to_thread(_email, channel, payload, timeout_s)
    except (aiohttp.ClientError, TimeoutError, OSError, smtplib.SMTPException, ValueError) as exc:
        return Outcome(ok=False, error=_describe(exc))
    except Exception as exc:  # a stored row the API would refuse: fail this attempt only
        log.exception("alert channel raised", extra={"channel": channel.name})
        return Outcome(ok=False, error=_describe(exc))


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


async def _post(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: dict[str, str],
    timeout_s: float,
) -> Outcome:
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with session.post(url, data=body, headers=headers, timeout=timeout) as response:
        text = await response.text(errors="replace")
        if 200 <= response.status < 300:
            return Outcome(ok=True, status_code=response.status)
        return Outcome(ok=False, status_code=response.status, error=text[:500] or None)


async def _webhook(
    channel: Channel, payload: dict[str, Any], session: aiohttp.ClientSession, timeout_s: float
) -> Outcome:
    body = encode(payload)
    headers = {"content-type": "application/json", EVENT_ID_HEADER: str(payload["event_id"])}
    if channel.secret:
        headers[HEADER] = sign(channel.secret, body)
    return await _post(session, str(channel.config["url"]), body, headers, timeout_s)


async def _slack(
    channel: Channel, payload: dict[str, Any], session: aiohttp.ClientSession, timeout_s: float
) -> Outcome:
    body = orjson.dumps(render_slack(payload))
    headers = {"content-type": "application/json"}
    return await _post(session, str(channel.config["webhook_url"]), body, headers, timeout_s)


def _email(channel: Channel, payload: dict[str, Any], timeout_s: float) -> Outcome:
    config = channel.config
    subject, text, html = render_email(payload)
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = str(config["from"])
    recipients = config["to"] if isinstance(config["to"], list) else [config["to"]]
    message["To"] = ", ".join(recipients)
    message["Tollhouse-Event-Id"] = str(payload["event_id"])
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    host, port = str(config["host"]), int(config.get("port") or (465 if config.get("tls") else 25))
    started = time.monotonic()
    smtp: smtplib.SMTP
    if config.get("tls"):
        smtp = smtplib.SMTP_SSL(host, port, timeout=timeout_s, context=ssl.create_default_context())
    else:
        smtp = smtplib.SMTP(host, port, timeout=timeout_s)
    with smtp:
        username = config.get("username")
        plaintext_ok = config.get("allow_plaintext_auth") is True
        if config.get("starttls") or (username and not config.get("tls") and not plaintext_ok):
            smtp.ehlo()
            if not smtp.has_extn("starttls"):
                raise PlaintextRefused(
                    f"SMTP server {host}:{port} does not offer STARTTLS: refusing to send "
                    "the SMTP password in plaintext (use tls: true or a server with "
                    "STARTTLS, or set allow_plaintext_auth: true to send it unencrypted)"
                )
            smtp.starttls(context=ssl.create_default_context())
        if username:
            smtp.login(str(config["username"]), channel.secret or "")
        smtp.send_message(message)
    log.info(
        "alert email sent",
        extra={"channel": channel.name, "ms": (time.monotonic() - started) * 1000},
    )
    return Outcome(ok=True, status_code=250)


def _preview(channel: Channel, payload: dict[str, Any]) -> str:
    if channel.type == "email":
        subject, text, _ = render_email(payload)
        return f"Subject: {subject}\n\n{text}"
    if channel.type == "slack":
        return orjson.dumps(render_slack(payload)).decode()
    return encode(payload).decode()
