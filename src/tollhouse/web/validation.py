"""Admin request bodies: Pydantic models in strict mode, every problem a 400 naming the
field.

``read_model(request, Model)`` reads the body (``bodies``: exact numbers, depth bound),
refuses a NUL anywhere (Postgres text cannot hold one) and validates it against
``Model``, a ``Body``: a JSON type that does not match (``"10"`` for a number, ``1`` for
a boolean, ``true`` for an integer) is a 400, never coerced; unknown fields are ignored
(as Bifrost does). The first few problems make the message, the first names ``param``::

    body = await read_model(request, CustomerCreate)

Bounds checked before anything is computed from a value:

- **Numbers** may be anything JSON can spell (``-1e1000000``, a million digits): their
  size is checked on the digits and the exponent before any arithmetic (``number``).
- **Lists** are counted before their items are validated (``at_most``): Pydantic
  validates every item, building an error for each bad one, before ``max_length``.
- **Messages** quote at most a short prefix of what was sent (``preview``).

A validator may raise ``ValidationFailed`` itself (a rule across fields, with its own
wording and ``param``): it is not a ``ValueError``, so Pydantic lets it through as is.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError
from pydantic_core import ErrorDetails
from starlette.requests import Request

from tollhouse.errors import ValidationFailed
from tollhouse.web.bodies import json_type, read_json_object

M = TypeVar("M", bound=BaseModel)

MAX_DIGITS = 40  # significant digits of any number in an admin body
MAX_MAGNITUDE = 40  # |x| < 10**40 (and 0 or ≥ 10**-40)
MAX_TEXT = 64  # durations, time zones: longer is wrong, whatever it says
PREVIEW = 64
MAX_MESSAGE = 1000


class Body(BaseModel):
    """An admin API body: strict types, unknown fields ignored, ``given()`` for merges."""

    model_config = ConfigDict(strict=True, extra="ignore")

    def given(self) -> dict[str, Any]:
        """The fields the client sent (``null`` included), by name."""
        return {name: getattr(self, name) for name in self.model_fields_set}


async def read_model(request: Request, model: type[M]) -> M:
    """The body of ``request`` validated against ``model``; a 400 otherwise."""
    return parse(model, await read_json_object(request, exact=True))


def parse(model: type[M], data: dict[str, Any]) -> M:
    """Validate a decoded body against ``model``; every problem is a 400 naming the field."""
    no_nul(data)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        raise ValidationFailed(
            short("; ".join(describe(error) for error in errors[:5])),
            param=preview(location(errors[0]["loc"])) or None,
        ) from None


# --- messages -------------------------------------------------------------------------


def preview(value: object) -> str:
    """``value`` for a message: its first ``PREVIEW`` characters."""
    text = value if isinstance(value, str) else str(value)
    return text[:PREVIEW] + ("…" if len(text) > PREVIEW else "")


def short(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE else message[:MAX_MESSAGE] + "…"


_MESSAGES = {
    "missing": "is required",
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "bool_type": "must be true or false",
    "list_type": "must be a list",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "string_too_short": "must not be empty",
    "too_long": "has too many items",
}


def location(loc: tuple[int | str, ...]) -> str:
    """``("budget", "alert_thresholds", 0)`` → ``budget.alert_thresholds[0]``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def describe(error: ErrorDetails) -> str:
    """One Pydantic error as the API words it: ``budget.max_limit must be a number, got
    string``."""
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "value_error":
        message = str(ctx.get("error", error["msg"]))
    elif kind in ("greater_than_equal", "less_than_equal"):
        bound = "at least" if kind == "greater_than_equal" else "at most"
        message = f"must be {bound} {ctx.get('ge', ctx.get('le'))}"
    elif kind in _MESSAGES:
        message = _MESSAGES[kind]
        if kind.endswith("_type"):
            message += f", got {json_type(error['input'])}"
    else:
        message = error["msg"][:1].lower() + error["msg"][1:]
    where = location(error["loc"])
    if not where:
        return message
    # "budget.max_limit cannot be negative", but "budget.reset_duration: Invalid …".
    return f"{where}: {message}" if message[:1].isupper() else f"{where} {message}"


# --- bounds ---------------------------------------------------------------------------


def number(value: Any) -> Any:
    """JSON numbers only: an int or a ``Decimal`` (exact reading); never a bool; of a
    size any later arithmetic can take."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise ValueError(f"must be a number, got {json_type(value)}")
    if isinstance(value, int) and value.bit_length() > 4 * MAX_DIGITS:
        raise ValueError(f"is out of range (more than {MAX_DIGITS} digits)")
    amount = Decimal(value)
    if not amount.is_finite():
        raise ValueError("must be a finite number")
    if amount and not -MAX_MAGNITUDE <= amount.adjusted() < MAX_MAGNITUDE:
        raise ValueError(
            f"is out of range (at most {MAX_MAGNITUDE} digits either side of the point)"
        )
    if len(amount.as_tuple().digits) > MAX_DIGITS:
        raise ValueError(f"has more than {MAX_DIGITS} significant digits")
    return amount


def whole(value: Any) -> Any:
    """An integer written as a JSON number with a fraction or an exponent (``5.0``,
    ``1e3``) is that integer, as JSON Schema reads it; ``5.5`` stays a number, for the
    field's strict ``int`` to refuse."""
    if isinstance(value, Decimal):
        amount = number(value)
        if amount == amount.to_integral_value():
            return int(amount)
    return value


def at_most(count: int) -> BeforeValidator:
    """A list's length, checked before its items are."""

    def check(value: Any) -> Any:
        if isinstance(value, list) and len(value) > count:
            raise ValueError(f"has too many items ({len(value)}; at most {count})")
        return value

    return BeforeValidator(check)


def text_at_most(value: Any) -> Any:
    if isinstance(value, str) and len(value) > MAX_TEXT:
        raise ValueError(f"is too long ({len(value)} characters, at most {MAX_TEXT})")
    return value


def no_nul(data: Any) -> None:
    """NUL cannot be stored in Postgres text; refuse it in any string, keys included.

    Depth-first with one iterator per open container: memory follows the nesting depth,
    not the body (a list of paths, one per item, was ~30 × the body)."""
    if isinstance(data, str):
        if "\x00" in data:
            raise ValidationFailed("body contains a NUL character", param="")
        return
    stack: list[tuple[Any, Any]] = [(None, _children(data))]
    while stack:
        step = next(stack[-1][1], None)
        if step is None:
            stack.pop()
            continue
        key, value = step
        if isinstance(key, str) and "\x00" in key:
            raise _nul_at([k for k, _ in stack[1:]], "a key")
        if isinstance(value, str):
            if "\x00" in value:
                raise _nul_at([*(k for k, _ in stack[1:]), key], "")
        elif isinstance(value, dict | list):
            stack.append((key, _children(value)))


def _children(value: Any) -> Any:
    if isinstance(value, dict):
        return iter(value.items())
    if isinstance(value, list):
        return enumerate(value)
    return iter(())


def _nul_at(path: list[Any], what: str) -> ValidationFailed:
    where = preview(location(tuple(path)))
    subject = f"{where or 'body'}" + (f" has {what} that" if what else "")
    return ValidationFailed(f"{subject} contains a NUL character", param=where)
