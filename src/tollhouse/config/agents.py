"""The agents' and their bus's settings (docs/agents.md), a part of ``Settings``."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import Field, field_validator

from tollhouse.config.providers import _Frozen
from tollhouse.windows import parse_duration

AGENT_TOOLS = ("echo", "http_get", "python", "shell")


def names(value: str) -> list[str]:
    """The items of a comma-separated setting, trimmed, empty ones dropped."""
    return [name.strip() for name in value.split(",") if name.strip()]


class AgentSettings(_Frozen):
    agent_model: str = Field(
        default="gpt-4o-mini",
        description="The model the conversation worker asks (through the gateway, with the "
        "session's key).",
    )
    agent_system_prompt: str = Field(
        default="", description="A system message put before every session's history."
    )
    agent_max_tokens: int = Field(
        default=1024, ge=1, le=1000000, description="The output cap of one model call."
    )
    agent_worker_in_process: bool = Field(
        default=True,
        description="Run the conversation worker and the tool executor in every "
        "`tollhouse serve` process (with the memory bus they can run nowhere else).",
    )
    agent_max_steps: int = Field(
        default=8,
        ge=1,
        le=100,
        description="Model calls one turn may make (each tool round is one more); past it "
        "the turn ends with a `step_limit` error.",
    )
    agent_tools: str = Field(
        default="echo,http_get,python,shell",
        description="Comma-separated tools offered to the model: `echo`, `http_get`, "
        "`python`, `shell` (empty: none).",
    )
    agent_tool_timeout_s: float = Field(
        default=120.0,
        gt=0,
        le=3600,
        description="How long a turn waits for its tool results; a call still without one "
        "is answered with a `timeout` error.",
    )
    agent_http_allow_hosts: str = Field(
        default="",
        description="Comma-separated hosts `http_get` may reach (`.example.com` also "
        "matches its subdomains; empty: none).",
    )
    agent_http_max_kb: int = Field(
        default=256, ge=1, le=65536, description="Most of a response `http_get` returns, KiB."
    )
    agent_http_timeout_s: float = Field(
        default=10.0, gt=0, le=300, description="Time limit of one `http_get`, seconds."
    )
    agent_sandbox_minutes: float = Field(
        default=30.0,
        gt=0,
        le=1440,
        description="Lease of the sandbox a session's `python` and `shell` calls run in "
        "(one per session, leased at its first such call).",
    )
    agent_persona_token_budgets: dict[str, int] = Field(
        default_factory=dict,
        description="Tokens (prompt + completion) a tenant's sessions of a persona may use "
        "per `agent_budget_window` (`{persona_id: tokens}`; `*` for any persona).",
    )
    agent_tenant_token_budget: int = Field(
        default=0,
        ge=0,
        description="Tokens a tenant's sessions may use per `agent_budget_window`, all "
        "personas together (0: no limit).",
    )
    agent_budget_window: str = Field(
        default="1d",
        description="The window of the agent token budgets (`1h`, `1d`, `1w`, `1M`…), "
        "calendar-aligned in UTC.",
    )
    session_heartbeat_s: float = Field(
        default=15.0,
        gt=0,
        le=300,
        description="A session stream with nothing to send sends a heartbeat this often.",
    )
    session_outbox_interval_s: float = Field(
        default=5.0, gt=0, le=300, description="How often unpublished session events are redriven."
    )
    session_cache_ttl_s: int = Field(
        default=300,
        ge=0,
        le=86400,
        description="How long a session's owner and persona stay cached in Redis (with "
        "`redis_url`), seconds; 0: not cached, every check reads the database.",
    )
    bus_backend: Literal["memory", "redis", "kafka"] = Field(
        default="memory",
        description="Where the agents' events travel: in this process (`memory`), Redis "
        "Streams (`redis`, on `redis_url`) or Kafka (`kafka`, on `bus_kafka_bootstrap`).",
    )
    bus_kafka_bootstrap: str | None = Field(
        default=None,
        description="Kafka bootstrap servers (`host:port,…`) for `bus_backend: kafka`.",
    )
    bus_kafka_fetch_wait_ms: int = Field(
        default=100,
        ge=1,
        le=10000,
        description="Longest a Kafka fetch waits for records. Apache Kafka answers as soon "
        "as a record arrives; a broker that does not (Tansu looks at half the wait, then "
        "more often until it is over) adds up to half of it to every hop, and a shorter "
        "wait costs more idle fetches.",
    )
    bus_namespace: str = Field(
        default="",
        pattern=r"^[A-Za-z0-9_-]{0,64}$",
        description="Prefix of the bus's topics and groups (Kafka `<namespace>.<topic>`, "
        "Redis `tollhouse:<namespace>:…`), for deployments sharing one broker.",
    )
    bus_partitions: int = Field(
        default=8,
        ge=1,
        le=1024,
        description="Partitions per topic: sessions are spread over them, each read by one "
        "worker at a time.",
    )
    bus_max_len: int = Field(
        default=100000,
        ge=100,
        le=100000000,
        description="Events kept per partition (memory and Redis; Kafka keeps by retention).",
    )
    bus_lease_s: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description="A worker silent this long is taken for dead: its partitions, and what it "
        "had not finished, go to another.",
    )

    @field_validator("agent_tools")
    @classmethod
    def _tools(cls, value: str) -> str:
        unknown = [n for n in names(value) if n not in AGENT_TOOLS]
        if unknown:
            raise ValueError(f"unknown tool {unknown[0]!r}; known: {', '.join(AGENT_TOOLS)}")
        return value

    @field_validator("agent_budget_window")
    @classmethod
    def _window(cls, value: str) -> str:
        parse_duration(value)  # a ValueError naming the forms
        return value

    @field_validator("agent_persona_token_budgets", mode="before")
    @classmethod
    def _from_json(cls, value: Any) -> Any:
        """The environment gives a JSON object as text."""
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                raise ValueError('must be a JSON object: {"persona": tokens, …}') from None
        return value

    @field_validator("agent_persona_token_budgets")
    @classmethod
    def _budgets(cls, value: dict[str, int]) -> dict[str, int]:
        for persona, tokens in value.items():
            if tokens < 0 or not 1 <= len(persona) <= 128:
                raise ValueError(f"{persona!r}: a persona id (1-128 characters) and tokens >= 0")
        return value
