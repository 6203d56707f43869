"""A session's log as the chat messages of its next model call: the client's messages,
the assistant's whole messages (not their deltas), its tool calls and their results, in
the log's order. What a client cannot see a model answer to — errors, cancellations,
the ends of turns — is left out."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any


def messages(rows: Iterable[Any], system: str = "") -> list[dict[str, Any]]:
    """``rows`` of ``session_events``, oldest first."""
    found: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    for row in rows:
        event = row.body
        if row.kind == "conversation_event" and row.type == "message":
            found.append({"role": "user", "content": _with_attachments(event)})
        elif row.kind == "assistant_event" and row.type == "message":
            found.append({"role": "assistant", "content": event.get("text", "")})
        elif row.kind == "assistant_event" and row.type == "tool_call":
            call = {
                "id": event["call_id"],
                "type": "function",
                "function": {
                    "name": event.get("tool", ""),
                    "arguments": json.dumps(event.get("arguments") or {}),
                },
            }
            last = found[-1] if found else None
            if last is not None and last["role"] == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)  # the calls of one step go together
            else:
                found.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif row.kind == "tool_result":
            content = event.get("output", "") if event.get("ok") else f"error: {event.get('error')}"
            found.append({"role": "tool", "tool_call_id": event["call_id"], "content": content})
    return found


def _with_attachments(event: dict[str, Any]) -> str:
    text = str(event.get("message", ""))
    for attachment in event.get("attachments") or ():
        body = attachment.get("text") or attachment.get("url") or ""
        text += f"\n\n[attachment {attachment.get('name', '')}]\n{body}"
    return text
