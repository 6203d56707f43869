"""A session's log as the chat messages of its next model call: the client's messages,
the assistant's whole messages (not their deltas), its tool calls and their results, in
the log's order. What a client cannot see a model answer to — errors, cancellations,
the ends of turns — is left out.

Two rules keep the messages a valid conversation whatever the log's interleaving:

- a tool call's result follows the assistant message that made the call, whenever it
  was logged (a client's message may be logged in between); a call without a result (a
  turn cancelled while it waited) is answered ``error: no result``, and a call answered
  twice keeps its first answer;
- a turn sees the client's messages up to its own (``until_seq``): one sent while it
  runs waits for the next turn, as double-texting ``enqueue`` says.
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
    for row in rows:
        if row.kind == "tool_result":
            event = row.body
            answer = event.get("output", "") if event.get("ok") else f"error: {event.get('error')}"
            results.setdefault(event["call_id"], answer)
    said: list[dict[str, Any]] = []
    step: tuple[Any, Any] | None = None  # (turn, step) of the last assistant message
    for row in rows:
        event = row.body
        if row.kind == "conversation_event" and row.type == "message":
            if until_seq is None or row.seq <= until_seq:
                said.append({"role": "user", "content": _with_attachments(event)})
                step = None
        elif row.kind == "assistant_event" and row.type == "message":
            said.append({"role": "assistant", "content": event.get("text", "")})
            step = (event.get("turn_id"), event.get("step"))
        elif row.kind == "assistant_event" and row.type == "tool_call":
            # The calls of one step, and the text said with them, are one message.
            mark = (event.get("turn_id"), event.get("step"))
            if step != mark or said[-1]["role"] != "assistant":
                said.append({"role": "assistant", "content": None})
                step = mark
            said[-1].setdefault("tool_calls", []).append(_call(event))
    found: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    for message in said:
        found.append(message)
        for call in message.get("tool_calls", ()):
            answer = results.get(call["id"], "error: no result (the turn ended before it came)")
            found.append({"role": "tool", "tool_call_id": call["id"], "content": answer})
    return found


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
