"""An OPA stand-in on loopback, for the tests of the ``opa`` policy engine.

No OPA binary is available here, so this small aiohttp server implements the part of
OPA's REST API that Tollhouse uses, evaluating with ``regopy`` (rego-cpp):

- ``PUT /v1/policies/{id}`` — the body is a Rego module; ``400 {"code":
  "invalid_parameter", "message"}`` when regopy refuses it (with every module loaded
  together, as OPA compiles them). ``DELETE /v1/policies/{id}``; ``GET /v1/policies``.
- ``POST /v1/data/{path}`` with ``{"input": …}`` — ``200 {"result": value,
  "decision_id"}``, or ``200 {"decision_id"}`` without ``result`` when the path is
  undefined, as OPA answers. The query binds the value (``x := data.a.b``): queried bare,
  regopy reports a ``false`` rule as undefined. An evaluation error is ``500 {"code":
  "internal_error"}``.
- ``GET /health`` — ``200 {}``.

Test paths, stateless so that tests sharing one server cannot disturb each other (their
segments are valid data path segments, so the engine sends them as it would any path):

- ``POST /v1/data/_test/sleep/{ms}`` — answers ``{"result": true}`` after ``ms``
  milliseconds (timeouts);
- ``POST /v1/data/_test/status/{code}`` — answers ``code`` with OPA's error envelope;
- ``POST /v1/data/_test/redirect`` — ``307`` to ``/v1/data/_test/sleep/0`` (which
  answers true, so a client that follows it is caught);
- ``POST /v1/data/_test/huge`` — ``{"result": true}`` padded past a megabyte.

``python -m devtools.opa_server --port 0`` listens on 127.0.0.1 only and prints its
port; ``OpaServer`` starts and stops such a process (``tests/policies/conftest.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web
from regopy import Input, Interpreter, LogLevel, RegoError  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parent.parent


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"code": code, "message": message}, status=status)


class Policies:
    """The modules loaded, and one bundle per queried path until they change."""

    def __init__(self) -> None:
        self.modules: dict[str, str] = {}
        self._bundles: dict[str, Any] = {}

    def _interpreter(self, modules: dict[str, str]) -> Any:
        interpreter = Interpreter()
        interpreter.log_level = LogLevel.NONE
        for ident, text in modules.items():
            interpreter.add_module(f"{ident}.rego", text)
        return interpreter

    def put(self, ident: str, text: str) -> None:
        modules = {**self.modules, ident: text}
        self._interpreter(modules).build("x := data")  # raises RegoError when refused
        self.modules = modules
        self._bundles.clear()

    def delete(self, ident: str) -> bool:
        self._bundles.clear()
        return self.modules.pop(ident, None) is not None

    def query(self, path: str, value: Any) -> tuple[bool, Any]:
        """``(defined, value)`` of ``data.<path>`` for the input ``value``."""
        bundle = self._bundles.get(path)
        if bundle is None:
            ref = "".join(f"[{json.dumps(part)}]" for part in path.split("/") if part)
            bundle = self._interpreter(self.modules).build(f"x := data{ref}")
            self._bundles[path] = bundle
        runner = Interpreter()
        runner.log_level = LogLevel.NONE
        runner.set_input(Input(value))
        output = runner.query_bundle(bundle)  # JSONDecodeError on an error term
        if not output.ok():
            raise RegoError("evaluation failed")
        bindings = output.results[0].bindings if output.results else {}
        return ("x" in bindings), bindings.get("x")


def make_app() -> web.Application:
    policies = Policies()

    async def put_policy(request: web.Request) -> web.Response:
        try:
            policies.put(request.match_info["id"], await request.text())
        except RegoError as exc:
            return _error(400, "invalid_parameter", f"error(s) occurred while compiling: {exc}")
        return web.json_response({})

    async def delete_policy(request: web.Request) -> web.Response:
        if not policies.delete(request.match_info["id"]):
            return _error(404, "resource_not_found", "storage_not_found_error: policy id")
        return web.json_response({})

    async def list_policies(request: web.Request) -> web.Response:
        result = [{"id": ident, "raw": text} for ident, text in policies.modules.items()]
        return web.json_response({"result": result})

    async def data(request: web.Request) -> web.Response:
        path = request.match_info["path"]
        if path.startswith("_test/"):
            return await _test_path(path.removeprefix("_test/"))
        try:
            body = await request.json() if request.can_read_body else {}
        except json.JSONDecodeError:
            return _error(400, "invalid_parameter", "body must be JSON")
        if not isinstance(body, dict):
            return _error(400, "invalid_parameter", "body must be a JSON object")
        try:
            defined, value = policies.query(path, body.get("input"))
        except (RegoError, json.JSONDecodeError) as exc:
            return _error(500, "internal_error", f"evaluation failed: {exc}"[:500])
        answer: dict[str, Any] = {"decision_id": str(uuid.uuid4())}
        if defined:
            answer["result"] = value
        return web.json_response(answer)

    async def health(request: web.Request) -> web.Response:
        return web.json_response({})

    app = web.Application(client_max_size=4 * 1024 * 1024)
    app.router.add_put("/v1/policies/{id}", put_policy)
    app.router.add_delete("/v1/policies/{id}", delete_policy)
    app.router.add_get("/v1/policies", list_policies)
    app.router.add_post("/v1/data/{path:.*}", data)
    app.router.add_get("/health", health)
    return app


async def _test_path(rest: str) -> web.Response:
    kind, _, arg = rest.partition("/")
    if kind == "sleep" and arg.isdigit():
        await asyncio.sleep(int(arg) / 1000)
        return web.json_response({"result": True})
    if kind == "status" and arg.isdigit():
        return _error(int(arg), "internal_error", f"test status {arg}")
    if kind == "redirect":
        raise web.HTTPTemporaryRedirect("/v1/data/_test/sleep/0")
    if kind == "huge":
        return web.json_response({"result": True, "padding": "x" * (1024 * 1024 + 1)})
    return _error(404, "resource_not_found", f"no test path {rest!r}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(128)  # connections wait in the backlog until the app serves
    print(sock.getsockname()[1], flush=True)
    web.run_app(make_app(), sock=sock, print=None, access_log=None)


class OpaServer:
    """``python -m devtools.opa_server`` as a process of its own on a loopback port."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> OpaServer:
        argv = [sys.executable, "-m", "devtools.opa_server", "--port", "0"]
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=log)
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if not line.isdigit():
            self.stop()
            raise RuntimeError(f"the OPA stand-in did not start: see {self.log}")
        self.port = int(line)
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1):
                    return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("the OPA stand-in did not answer") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()
        self.process = None

    def put_policy(self, ident: str, module: str) -> None:
        """Load (or replace) a module; ``urllib.error.HTTPError`` (400) when refused."""
        request = urllib.request.Request(
            f"{self.url}/v1/policies/{ident}", data=module.encode(), method="PUT"
        )
        request.add_header("content-type", "text/plain")
        with urllib.request.urlopen(request, timeout=10):
            pass

    def __enter__(self) -> OpaServer:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


if __name__ == "__main__":
    main()
