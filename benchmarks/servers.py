"""The servers of the gateway benchmark: nginx as the upstream, LiteLLM, Tollhouse.

Each function answers a config file, an environment or an executable; starting and
stopping them is harness.Processes' job.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from harness import REPO, BenchError

HERE = Path(__file__).resolve().parent
LITELLM_VENV = HERE / ".venv-litellm"
# The reference is pinned so that figures from different days compare; bump it
# deliberately and re-measure (docs/benchmarks.md names the version used).
LITELLM_VERSION = "1.106.2"
# Part of LiteLLM's proxy-runtime extra but not of litellm[proxy]: without it, 1.106.2
# retries a failing import of its OpenTelemetry logger on every request (~0.16 ms
# each). Installing it makes the reference faster, so the ratio against it is the
# conservative one.
LITELLM_EXTRAS = ["opentelemetry-sdk==1.45.2"]

# What the upstream answers to every chat completion: a canned, non-streaming
# OpenAI chat.completion with usage, so that gateways can meter it.
CANNED_COMPLETION = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello! How can I help you today?"},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21},
        "system_fingerprint": "fp_bench",
    },
    separators=(",", ":"),
)


# --- the upstream -------------------------------------------------------------------


def ensure_tools() -> None:
    """Install nginx and wrk from the distribution when they are missing (needs root)."""
    missing = [
        t
        for t in ("nginx", "wrk")
        if shutil.which(t) is None and not Path(f"/usr/sbin/{t}").exists()
    ]
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise BenchError(f"missing {', '.join(missing)}: install nginx-light and wrk first")
    print(f"installing {' '.join(missing)} with apt-get ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "nginx-light", "wrk"], check=True, env=env)


def nginx_bin() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


def nginx_config(workdir: Path, name: str, port: int) -> Path:
    """A one-worker nginx that answers every chat completion from memory."""
    d = workdir / name
    d.mkdir()
    conf = f"""
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 65536;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 16384; multi_accept on; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        location = /v1/chat/completions {{
            default_type application/json;
            return 200 '{CANNED_COMPLETION}';
        }}
        location = /healthz {{ return 200 'ok'; }}
        location / {{ return 404; }}
    }}
}}
"""
    path = d / "nginx.conf"
    path.write_text(conf)
    return path


# --- LiteLLM, the reference ------------------------------------------------------------


def ensure_litellm(version: str = LITELLM_VERSION) -> Path:
    """The LiteLLM proxy in its own virtualenv under benchmarks/, installed on first use."""
    python = LITELLM_VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {LITELLM_VENV.relative_to(REPO)} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
    stamp = LITELLM_VENV / "bench-installed.txt"
    wanted = " ".join([f"litellm[proxy]=={version}", *LITELLM_EXTRAS])
    if litellm_version() != version or not stamp.exists() or stamp.read_text() != wanted:
        print(f"installing {wanted} (about a minute) ...", flush=True)
        pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        subprocess.run([*pip, *wanted.split()], check=True)
        stamp.write_text(wanted)
    return LITELLM_VENV / "bin" / "litellm"


def litellm_version() -> str | None:
    python = LITELLM_VENV / "bin" / "python"
    if not python.exists():
        return None
    out = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True,
        text=True,
    )
    return out.stdout.strip() or None


def litellm_config(workdir: Path, upstream: str, master_key: str) -> Path:
    """One model, no database, no callbacks: LiteLLM at its leanest (auth = master key)."""
    config = {
        "model_list": [
            {
                "model_name": "gpt-4o-mini",
                "litellm_params": {
                    "model": "openai/gpt-4o-mini",
                    "api_base": upstream,
                    "api_key": "sk-upstream-dummy",
                },
            }
        ],
        "litellm_settings": {
            "callbacks": [],
            "success_callback": [],
            "failure_callback": [],
            "request_timeout": 30,
        },
        "general_settings": {
            "master_key": master_key,
            "disable_spend_logs": True,
            "disable_error_logs": True,
            "disable_reset_budget": True,
        },
    }
    path = workdir / "litellm.yaml"
    path.write_text(json.dumps(config, indent=2))  # JSON is valid YAML.
    return path


def _clean_env(base: dict[str, str]) -> dict[str, str]:
    """The caller's environment less anything that would configure a gateway or provider."""
    prefixes = ("TOLLHOUSE_", "LITELLM_", "OPENAI_", "ANTHROPIC_", "DATABASE_URL", "REDIS_")
    return {k: v for k, v in base.items() if not k.upper().startswith(prefixes)}


def litellm_env(base: dict[str, str]) -> dict[str, str]:
    env = _clean_env(base)
    env.update(
        LITELLM_LOCAL_MODEL_COST_MAP="True",  # no fetch of the price map at start
        LITELLM_LOG="ERROR",
        LITELLM_MODE="PRODUCTION",
        DISABLE_ADMIN_UI="True",
    )
    return env


# --- Tollhouse -------------------------------------------------------------------------


def tollhouse_bin() -> str | None:
    local = REPO / ".venv" / "bin" / "tollhouse"
    return str(local) if local.exists() else shutil.which("tollhouse")


def tollhouse_env(base: dict[str, str], workdir: Path, upstream: str) -> dict[str, str]:
    env = _clean_env(base)
    env.update(
        OPENAI_BASE_URL=upstream,
        OPENAI_API_KEY="sk-bench",
        TOLLHOUSE_DATABASE_URL=f"sqlite+aiosqlite:///{workdir}/bench.db",
        TOLLHOUSE_LOG_LEVEL="warning",
        TOLLHOUSE_ALLOW_ANONYMOUS="true",
    )
    return env


def tollhouse_version(exe: str) -> str:
    """Package version and repository commit of the Tollhouse that was measured."""
    python = Path(exe).parent / "python"
    code = "import importlib.metadata as m; print(m.version('tollhouse'))"
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
    git = ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]
    commit = subprocess.run(git, capture_output=True, text=True)
    return f"{out.stdout.strip() or '?'} ({commit.stdout.strip() or 'no git'})"


def admin_post(base_url: str, path: str, body: dict[str, object]) -> dict[str, object]:
    """``POST /api/<path>`` on a Tollhouse without an admin key (loopback), its answer."""
    import json
    import urllib.request

    request = urllib.request.Request(
        f"{base_url}/api/{path}",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return dict(json.loads(response.read()))


def create_governed_key(
    base_url: str, *, prepaid: bool = False, tags: list[str] | None = None
) -> str:
    """A customer, a team and a key, each with a budget and rate limits too large to
    refuse anything in a benchmark; returns the key's value. ``prepaid``: the customer
    also has a prepaid account holding more credit than a benchmark can spend, so every
    request is paid from it as well."""

    def post(path: str, body: dict[str, object]) -> dict[str, object]:
        return admin_post(base_url, path, body)

    limits: dict[str, object] = {
        "budget": {"max_limit": 1000000000, "reset_duration": "1M"},
        "rate_limit": {
            "request_max_limit": 10**12,
            "request_reset_duration": "1h",
            "token_max_limit": 10**15,
            "token_reset_duration": "1h",
        },
    }
    customer = post("governance/customers", {"name": "bench-customer", **limits})["customer"]
    team = post("governance/teams", {"name": "bench-team", "customer_id": customer["id"], **limits})  # type: ignore[index]
    key = post(
        "governance/virtual-keys",
        {"name": "bench-key", "team_id": team["team"]["id"], "tags": tags, **limits},  # type: ignore[index]
    )["virtual_key"]
    if prepaid:
        account = post(
            "credits/accounts",
            {"owner_type": "customer", "owner_id": customer["id"]},  # type: ignore[index]
        )["account"]
        post(f"credits/accounts/{account['id']}/grants", {"amount": 1000000000})  # type: ignore[index]
    return str(key["value"])  # type: ignore[index]
