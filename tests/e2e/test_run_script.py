"""``scripts/run``, the README's command: Tollhouse from the checkout in a virtual
environment of its own (never the system Python, which PEP 668 may close to pip), serving
on its embedded default, SQLite in ``./tollhouse.db`` of the directory it is run from.

The environment here is made without pip and sees this process's packages through
``site`` directories, so nothing is downloaded; ``scripts/run`` finds it installed for
this checkout and starts at once.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tollhouse.cli.processes import free_port

from .conftest import Tollhouse
from .helpers import HELLO, sqlite_query, wait_for_records

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def borrowed_venv(path: Path) -> Path:
    """A venv without pip whose ``site`` reaches this interpreter's packages."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    (site_dir,) = path.glob("lib/python*/site-packages")
    ours = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    lines = [f"import site; site.addsitedir({p!r})" for p in ours]
    (site_dir / "_tollhouse_test.pth").write_text("\n".join(lines) + "\n")
    (path / ".tollhouse-run").write_text(f"{ROOT}\n")  # installed for this checkout
    return path


def test_run_serves_the_embedded_default_from_its_own_environment(
    tollhouse: Tollhouse, tmp_path: Path
) -> None:
    venv = borrowed_venv(tmp_path / "venv")
    upstream = tollhouse.dev_upstream()
    env = tollhouse.env(upstream, TOLLHOUSE_VENV=str(venv), PYTHON="/nonexistent/python3")
    del env["TOLLHOUSE_DATABASE_URL"], env["TOLLHOUSE_CONFIG"]  # the embedded default
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    script = (str(ROOT / "scripts" / "run"),)
    process = tollhouse.start("run", ["serve", "--port", str(port)], env, url + "/readyz", script)

    body = {"model": "gpt-4o-mini", "messages": HELLO}
    reply = httpx.post(f"{url}/v1/chat/completions", json=body)
    assert reply.status_code == 200, reply.text
    (record,) = wait_for_records(url, 1)
    assert record["status"] == "success"
    database = tollhouse.root / "tollhouse.db"  # ./tollhouse.db of the directory run from
    assert sqlite_query(database, "SELECT count(*) FROM usage_records") == [(1,)]
    assert "installing" not in process.output()  # up to date: nothing installed
    tollhouse.stop_all()
    assert process.proc.returncode == 0, process.output()
