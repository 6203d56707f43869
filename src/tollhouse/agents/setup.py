"""The agent workers a process runs: both in every ``tollhouse serve`` with
``agent_worker_in_process`` (the memory bus allows nothing else), or one role per
``tollhouse worker --role conversation|tools`` process (docs/agents.md, *Workers*).

Either way a worker is built on the process's running services: the conversation worker
calls the same ``Gateway`` a ``/v1`` request does, the tool executor asks the same
policy gate and leases through the same broker.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from tollhouse.agents.executor import ToolExecutor
from tollhouse.agents.feed import SessionFeed
from tollhouse.agents.tools import Toolbox
from tollhouse.agents.worker import ConversationWorker
from tollhouse.bus.backends import EventBus
from tollhouse.config import Settings
from tollhouse.policies.gate import PolicyGate

Role = Literal["conversation", "tools"]
ROLES: tuple[Role, ...] = ("conversation", "tools")


class AgentRuntime(Protocol):
    """What the workers use of the running service (``app.Services``)."""

    @property
    def settings(self) -> Settings: ...
    @property
    def engine(self) -> AsyncEngine: ...
    @property
    def bus(self) -> EventBus: ...
    @property
    def session_feed(self) -> SessionFeed: ...
    @property
    def gateway(self) -> Any: ...
    @property
    def admission(self) -> Any: ...
    @property
    def policies(self) -> PolicyGate: ...
    @property
    def broker(self) -> Any: ...


def worker_name() -> str:
    """Unique among a group's members: host, process and a random part."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


async def start_workers(
    services: AgentRuntime, roles: tuple[Role, ...], stack: contextlib.AsyncExitStack
) -> list[ConversationWorker | ToolExecutor]:
    """Start the workers of ``roles``, each stop on ``stack``."""
    admission = services.admission

    async def keys(key_id: str) -> Any:
        """The key as admission knows it now (``None``: gone, revoked or expired); a key this
        process has not seen yet (made on another replica since its last poll) is looked
        for again after catching up."""
        found = admission.snapshot.keys_by_id.get(key_id)
        if found is None:
            await admission.catch_up()
            found = admission.snapshot.keys_by_id.get(key_id)
        if found is None or not found.is_active:
            return None
        if found.expires_at is not None and found.expires_at <= datetime.now(UTC):
            return None  # what ``authenticate`` refuses, the workers do not use either
        return found

    started: list[ConversationWorker | ToolExecutor] = []
    for role in roles:
        worker: ConversationWorker | ToolExecutor
        if role == "conversation":
            worker = ConversationWorker(
                services.engine,
                services.bus,
                services.gateway,
                keys,
                services.settings,
                worker_name(),
                services.session_feed,
            )
        else:
            toolbox = Toolbox(services.settings, services.broker)
            worker = ToolExecutor(
                services.engine, services.bus, services.policies, toolbox, keys, worker_name()
            )
        await worker.start()
        stack.push_async_callback(worker.stop)
        started.append(worker)
    return started
