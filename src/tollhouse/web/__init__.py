"""The HTTP edge: what every request passes before a route runs.

- ``guard.EdgeGuard`` (ASGI middleware): bodies bounded by ``max_request_body_mb``
  (refused by ``Content-Length`` before a byte is read), NUL bytes in paths and queries;
- ``bodies``: the JSON body reader with a nesting bound;
- ``protocol``: the uvicorn protocol with header-size, header and body read timeouts;
- ``server.server_config``: the one uvicorn configuration (proxy headers only from
  ``trusted_proxies``, connection limit), for ``serve`` and the tests' live servers.

``docs/security.md`` explains each limit and the threat it answers.
"""
