"""The sandbox broker's settings (docs/sandboxes.md), a part of ``Settings``."""

from __future__ import annotations

from pydantic import Field

from tollhouse.config.providers import _Frozen


class SandboxSettings(_Frozen):
    sandbox_dir: str = Field(
        default="tollhouse-sandboxes",
        description="Directory (relative to the working directory) holding the work "
        "directories of local sandboxes.",
    )
    sandbox_lab_hours: float = Field(
        default=2.0,
        gt=0,
        le=720,
        description="Length of a lease when the track does not say (`lab_duration_hours`).",
    )
    sandbox_max_lab_hours: float = Field(
        default=24.0,
        gt=0,
        le=720,
        description="Longest lease a track may ask for.",
    )
    sandbox_grace_minutes: float = Field(
        default=15.0,
        ge=0,
        le=1440,
        description="Added to a lease's lab duration before it expires.",
    )
    sandbox_reaper_interval_s: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="How often a server expires leases and deletes the sandboxes marked "
        "for deletion (0 work when there is none).",
    )
    sandbox_pool_target: int = Field(
        default=0,
        ge=0,
        le=100000,
        description="Local sandboxes the reaper keeps available, creating more as leases "
        "take them (0: the pool is seeded by hand).",
    )
    sandbox_retry_after_s: int = Field(
        default=30,
        ge=1,
        le=3600,
        description="`Retry-After` of a 503 `pool_exhausted`.",
    )
    sandbox_track_requests_per_minute: int = Field(
        default=120,
        ge=0,
        le=1000000,
        description="Broker API requests a track may make per minute (0: no limit); shared "
        "through Redis when `redis_url` is set, per server otherwise.",
    )
    sandbox_cors_origins: str = Field(
        default="",
        description="Comma-separated origins whose pages may call the broker API "
        "(`*` for any; empty: no CORS headers).",
    )
    sandbox_uid_base: int = Field(
        default=200000,
        ge=65536,
        le=2**31 - 2000000,
        description="Local sandboxes run their commands as uids from here up, one per "
        "sandbox (when the server runs as root).",
    )
    sandbox_exec_cpu_s: int = Field(
        default=10, ge=1, le=3600, description="CPU seconds of one command run in a local sandbox."
    )
    sandbox_exec_memory_mb: int = Field(
        default=512, ge=16, le=65536, description="Address space of one command, MiB."
    )
    sandbox_exec_file_mb: int = Field(
        default=64, ge=1, le=65536, description="Largest file one command may write, MiB."
    )
    sandbox_exec_open_files: int = Field(
        default=256, ge=16, le=65536, description="Open files of one command."
    )
    sandbox_exec_processes: int = Field(
        default=64, ge=1, le=4096, description="Processes a sandbox's uid may run at once."
    )
    sandbox_exec_wall_s: float = Field(
        default=30.0, gt=0, le=3600, description="Wall-clock time of one command."
    )
    sandbox_exec_output_kb: int = Field(
        default=1024,
        ge=1,
        le=65536,
        description="Output (stdout and stderr) kept of one command, KiB; past it the "
        "command is stopped.",
    )
