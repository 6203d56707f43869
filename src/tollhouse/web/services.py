"""How a route reaches the resources the running service holds (docs/architecture.md).

``app.py`` starts them in its lifespan and gathers them into one typed ``Services``
object, which the app holds as ``request.app.services``. A domain's routes cannot import
``app.py`` (it imports them), so each declares the part it uses as a ``Protocol`` of
read-only properties and reads it through one accessor annotated with that Protocol;
``app.py`` assigns its ``Services`` to every such Protocol, so mypy proves the one object
satisfies them all.
"""

from __future__ import annotations

from typing import Protocol


class NotStarted(RuntimeError):
    """The services were asked for before the lifespan had started them (no lifespan
    ran, or its start-up failed): nothing can be served yet."""


class FailureCounter(Protocol):
    """The admin API's failure throttle (``admin`` imports the domains, not back): a bad
    webhook signature counts against its sender as a bad admin key does."""

    def check(self, client: str) -> None: ...

    def failed(self, client: str) -> None: ...
