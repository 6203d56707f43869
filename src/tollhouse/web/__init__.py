"""The HTTP toolkit every domain uses (docs/http.md), and the edge every request passes.

The edge, before a route runs:

- ``guard.EdgeGuard`` (ASGI middleware): bodies bounded by ``max_request_body_mb``
  (refused by ``Content-Length`` before a byte is read), NUL bytes in paths and queries;
- ``protocol``: the uvicorn protocol with header-size, header and body read timeouts;
- ``server.server_config``: the one uvicorn configuration (proxy headers only from
  ``trusted_proxies``, connection limit), for ``serve`` and the tests' live servers.

The toolkit, in routes:

- ``bodies``: the one JSON body reader (depth bound; exact numbers for admin bodies);
- ``validation``: strict request models (``Body``), ``read_model``, the 400 wording;
- ``query``: ``Query`` models, counts and times read one way;
- ``responses``: ``JSONResponse`` (exact ``Decimal``, one RFC 3339 time format) and the
  response models' base (``Reply``);
- ``routing``: ``Resource`` and ``Operation``, routes that describe themselves;
- ``openapi``: the OpenAPI document built from those routes;
- ``services``: how a route reaches the running service's resources.

``docs/security.md`` explains each limit of the edge and the threat it answers.
"""
