"""A session's log as the chat messages of its next model call: each of the client's
messages, then what its turn said — the assistant's whole messages (not their deltas),
its tool calls and their results. What a client cannot see a model answer to — errors,
cancellations, the ends of turns — is left out.

Three rules keep the messages a valid conversation whatever the log's interleaving:

- a turn's events follow the message that started it (``turn_id``), even when a
  message sent while it ran was logged in between (double-texting ``enqueue``): that
  message comes after the turn's answer, as its own turn;
- a tool call's result follows the assistant message that made the call; a call
  without a result (a turn cancelled, or stopped at its step limit, before it came) is
  answered ``error: no result``, and a call answered twice keeps its first answer; a
  failed call's answer is its error and whatever it printed;
- a turn sees the client's messages up to its own (``until_seq``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any


def messages(
    rows: Iterable[Any], system: str = "", until_seq: int | None = None
) -> list[dict[str, Any]]:
    """``rows`` of ``session_events``, oldest first."""
    rows = list(rows)
    results: dict[str, str] = {}
    turns: dict[str, list[Any]] = {}  # a message's event id -> its turn's events
    for row in rows:
        if row.kind == "tool_result":
            results.setdefault(row.body["call_id"], _answer(row.body))
        elif row.kind == "assistant_event" and row.type in ("message", "tool_call"):
            turns.setdefault(str(row.body.get("turn_id")), []).append(row)
    said: list[dict[str, Any]] = []
    for row in rows:
        if row.kind != "conversation_event" or row.type != "message":
            continue
        if until_seq is not None and row.seq > until_seq:
            continue
        said.append({"role": "user", "content": _with_attachments(row.body)})
        step: Any = None  # the step of the last assistant message of this turn
        for spoken in turns.get(row.event_id, ()):
            event = spoken.body
            if spoken.type == "message":
                said.append({"role": "assistant", "content": event.get("text", "")})
                step = event.get("step")
                continue
            # The calls of one step, and the text said with them, are one message.
            if step != event.get("step") or said[-1]["role"] != "assistant":
                said.append({"role": "assistant", "content": None})
                step = event.get("step")
            said[-1].setdefault("tool_calls", []).append(_call(event))
    found: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    for message in said:
        found.append(message)
        for call in message.get("tool_calls", ()):
            answer = results.get(call["id"], "error: no result (the turn ended before it came)")
            found.append({"role": "tool", "tool_call_id": call["id"], "content": answer})
    return found


def _answer(result: dict[str, Any]) -> str:
    """What the model is told a call gave: its output, or its error and what it printed."""
    output = str(result.get("output") or "")
    if result.get("ok"):
        return output
    error = f"error: {result.get('error') or 'the call failed'}"
    return f"{error}\n{output}" if output else error


def _call(event: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": event["call_id"],
        "type": "function",
        "function": {
            "name": event.get("tool", ""),
            "arguments": json.dumps(event.get("arguments") or {}),
        },
    }


def _with_attachments(event: dict[str, Any]) -> str:
    text = str(event.get("message", ""))
    for attachment in event.get("attachments") or ():
        body = attachment.get("text") or attachment.get("url") or ""
        text += f"\n\n[attachment {attachment.get('name', '')}]\n{body}"
    return text
