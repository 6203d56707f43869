"""Inference while every alert channel hangs: latency and throughput must not move.

    python benchmarks/alerts.py [--runs 3] [--quick] [--json out.json]

Starts, on loopback only: nginx (the upstream), one Tollhouse (1 worker, SQLite), and a
"black hole" receiver that accepts connections and never answers. It measures c1 p50
and c32 requests/s through the gateway (wrk), then makes the black hole the default
alert channel, posts 500 budget events to the inbound webhook so that the dispatcher is
busy with sends that only time out, and measures again while they hang. Runs alternate
between the two states are not possible (the backlog drains), so the figures compare
the medians before and during, in one run of the same server.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as h
import servers

from tollhouse.alerts.signing import sign

INBOUND = "bench-inbound-secret-0123456789abcdef"
EVENTS = 500


class BlackHole:
    """Accepts every connection and reads forever: a receiver that never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1024)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self._held.append(conn)  # never answered, never closed

    def close(self) -> None:
        self.sock.close()
        for conn in self._held:
            conn.close()


def post(url: str, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return dict(json.loads(response.read()))


def measure(url: str, runs: int, seconds: float, cpus: dict[str, Any], label: str) -> dict:
    out: dict[str, list[dict[str, Any]]] = {"c1": [], "c32": []}
    for scenario, (threads, conns) in {"c1": (1, 1), "c32": (2, 32)}.items():
        for run in range(runs):
            r = h.run_wrk(
                url, threads=threads, connections=conns, seconds=seconds,
                api_key="sk-bench", cpus=cpus["load"],
            )  # fmt: skip
            out[scenario].append(r)
            print(
                f"  {label:<7} {scenario} run {run + 1}/{runs} {r['rps']:8.0f} req/s"
                f"  p50 {r['latency_us']['p50'] / 1000:.3f} ms",
                flush=True,
            )
    return out


def medians(raw: dict[str, list[dict[str, Any]]]) -> dict[str, float]:
    return {
        "c1_p50_ms": statistics.median(r["latency_us"]["p50"] for r in raw["c1"]) / 1000,
        "c32_rps": statistics.median(r["rps"] for r in raw["c32"]),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runs", type=int)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    runs = args.runs or (2 if args.quick else 3)
    seconds = 2.0 if args.quick else 5.0
    servers.ensure_tools()
    cpus = h.cpu_layout(True)
    hole = BlackHole()
    with tempfile.TemporaryDirectory(prefix="tollhouse-alerts-") as tmp:
        workdir = Path(tmp)
        procs = h.Processes(workdir)
        try:
            port = h.free_port()
            conf = servers.nginx_config(workdir, "upstream", port)
            nginx = [servers.nginx_bin(), "-p", str(workdir), "-c", str(conf)]
            procs.start("nginx", nginx, cpus=cpus["upstream"])
            procs.wait_ready("nginx", f"http://127.0.0.1:{port}/healthz", timeout=10)
            env = servers.tollhouse_env(dict(os.environ), workdir, f"http://127.0.0.1:{port}/v1")
            env.update(
                TOLLHOUSE_SECRET_KEY="bench-alerts-key-0123456789abcdefghij",
                TOLLHOUSE_INBOUND_WEBHOOK_SECRET=INBOUND,
                TOLLHOUSE_SPOOL_DIR=str(workdir / "spool"), TOLLHOUSE_ALERT_SEND_TIMEOUT_S="30",
            )  # fmt: skip
            tport = h.free_port()
            url = f"http://127.0.0.1:{tport}"
            argv_ = [servers.tollhouse_bin() or "tollhouse", "serve", "--port", str(tport)]
            procs.start("tollhouse", argv_, env=env, cpus=cpus["sut"], cwd=workdir)
            procs.wait_ready("tollhouse", url + "/readyz", timeout=60)
            h.probe(url, "sk-bench")
            for _ in range(2):  # warm-up
                h.run_wrk(
                    url, threads=2, connections=32, seconds=1, api_key="sk-bench", cpus=cpus["load"]
                )
            before = measure(url, runs, seconds, cpus, "before")
            # The same state measured again: how much the figures move on their own.
            control = measure(url, runs, seconds, cpus, "control")

            channel = {"name": "hole", "type": "webhook", "is_default": True}
            channel["config"] = {"url": f"http://127.0.0.1:{hole.port}/hook"}
            post(f"{url}/api/notification-channels", json.dumps(channel).encode(),
                 {"content-type": "application/json"})  # fmt: skip
            for n in range(EVENTS):
                event = {"spend": 100, "max_budget": 100, "event": "budget_crossed",
                         "event_group": "team", "event_message": f"bench event {n}"}  # fmt: skip
                body = json.dumps(event).encode()
                post(
                    f"{url}/api/webhooks/budget", body, {"Tollhouse-Signature": sign(INBOUND, body)}
                )
            deadline = time.monotonic() + 10
            while hole.accepted < 16 and time.monotonic() < deadline:
                time.sleep(0.05)
            during = measure(url, runs, seconds, cpus, "hanging")
            held = hole.accepted
        finally:
            procs.stop_all()
            hole.close()
    b, c, d = medians(before), medians(control), medians(during)
    print()
    print(f"before : c1 p50 {b['c1_p50_ms']:.3f} ms   c32 {b['c32_rps']:.0f} req/s")
    print(f"control: c1 p50 {c['c1_p50_ms']:.3f} ms   c32 {c['c32_rps']:.0f} req/s")
    print(f"hanging: c1 p50 {d['c1_p50_ms']:.3f} ms   c32 {d['c32_rps']:.0f} req/s"
          f"   ({held} alert connections held open by the receiver)")  # fmt: skip
    print(f"change : c1 p50 {d['c1_p50_ms'] - b['c1_p50_ms']:+.3f} ms   "
          f"c32 {100 * (d['c32_rps'] / b['c32_rps'] - 1):+.1f} %")  # fmt: skip
    if args.json:
        figures = {"before": b, "control": c, "hanging": d, "held": held}
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
