"""The overview: spend, requests, errors and latency over a date range, and a time
series grouped by customer, team, key or model — every figure read from the roll-up
tables (``ledger.rollups``), never from the raw ledger, so the page costs the same at
ten million records as at ten (docs/dashboard.md, *Overview*)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, get_args

from starlette.requests import Request
from starlette.responses import Response

from tollhouse.dashboard.access import Visitor
from tollhouse.dashboard.pages import Names, names, page, services
from tollhouse.dashboard.render import html
from tollhouse.errors import ValidationFailed
from tollhouse.ledger import rollups
from tollhouse.web.query import time_param

RANGES = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30),
          "90d": timedelta(days=90)}  # fmt: skip
GROUPS: tuple[str, ...] = ("none", *get_args(rollups.Dimension))
METRICS = ("cost", "requests", "tokens", "errors")
MAX_SERIES = 8  # the largest groups by spend; the rest are summed as "others"
OTHERS = "\x00others"  # the group of the rest (no id or name can be this)
_KINDS = {"customer": "customer", "team": "team", "key": "key"}


@dataclass(frozen=True, slots=True)
class Choice:
    since: datetime
    until: datetime
    preset: str | None
    group: str
    metric: str
    key_ids: tuple[str, ...]


def _choice(request: Request, now: datetime) -> Choice:
    """What the page shows, from its query; a 400 naming the parameter otherwise."""
    params = request.query_params
    group = params.get("group") or "none"
    if group not in GROUPS:
        raise ValidationFailed(f"group must be one of {', '.join(GROUPS)}", param="group")
    metric = params.get("metric") or "cost"
    if metric not in METRICS:
        raise ValidationFailed(f"metric must be one of {', '.join(METRICS)}", param="metric")
    since = time_param(params.get("since"), "since")
    until = time_param(params.get("until"), "until")
    preset = None
    if since is None and until is None:
        preset = params.get("range") or "7d"
        if preset not in RANGES:
            raise ValidationFailed(f"range must be one of {', '.join(RANGES)}", param="range")
        until, since = now, now - RANGES[preset]
    until = until or now
    since = since or until - RANGES["7d"]
    if since >= until:
        raise ValidationFailed("since must be before until", param="since")
    if until - since > timedelta(days=3660):
        raise ValidationFailed("the range may span ten years at most", param="since")
    keys = tuple(dict.fromkeys(k for k in params.getlist("key") if k))[:20]
    return Choice(since, until, preset, group, metric, keys)


@page
async def overview(request: Request, who: Visitor) -> Response:
    now = datetime.now(UTC)
    try:
        choice = _choice(request, now)
    except ValidationFailed as exc:
        context = {"title": "Overview", "nav": "overview", "error": exc.message, **_empty(request)}
        return html(request, "overview.html", context, who, 400)
    grain = rollups.choose_grain(choice.since, choice.until)
    since, until = rollups.snap(choice.since, choice.until, grain)
    where = rollups.RollupFilter(since, until, grain, key_ids=choice.key_ids)
    group = "key" if choice.key_ids and choice.group == "none" else choice.group
    async with services(request).engine.connect() as conn:
        totals = await rollups.totals(conn, where)
        points = await _points(conn, where, group)
    n = names(request)
    chart = _chart(points, group, choice.metric, grain, since, until, n)
    context = {
        "title": "Overview",
        "nav": "overview",
        "error": None,
        "choice": choice,
        "grain": grain,
        "since": since,
        "until": until,
        "totals": totals,
        "chart": chart,
        "error_rate": (totals.errors / totals.requests) if totals.requests else None,
        **_empty(request),
    }
    return html(request, "overview.html", context, who)


async def _points(conn: Any, where: rollups.RollupFilter, group: str) -> list[rollups.Point]:
    """The series to draw. By key, without keys chosen, only the largest keys are read
    (a thousand keys over 90 days are 90,000 roll-up rows) and the rest is the total
    less them: the ``others`` series."""
    if group == "none":
        return await rollups.series(conn, where, None)
    if group != "key" or where.key_ids:
        return await rollups.series(conn, where, group)  # type: ignore[arg-type]
    top = await rollups.top_groups(conn, where, "key", MAX_SERIES)
    shown = tuple(key for key, _, _ in top)
    points = await rollups.series(conn, replace(where, key_ids=shown), "key") if shown else []
    drawn: dict[datetime, list[Any]] = {}
    for p in points:
        sums = drawn.setdefault(p.bucket, [0, 0, 0, Decimal(0)])
        for i, value in enumerate((p.requests, p.errors, p.tokens, p.cost)):
            sums[i] += value
    for p in await rollups.series(conn, where, None):
        requests, errors, tokens, cost = drawn.get(p.bucket, [0, 0, 0, Decimal(0)])
        rest = rollups.Point(p.bucket, OTHERS, p.requests - requests, p.errors - errors,
                             p.tokens - tokens, p.cost - cost)  # fmt: skip
        if rest.requests or rest.cost:
            points.append(rest)
    return points


def _empty(request: Request) -> dict[str, Any]:
    """The pickers, shown whatever the page's state."""
    return {"ranges": list(RANGES), "groups": GROUPS, "metrics": METRICS,
            "key_choices": names(request).choices("key")}  # fmt: skip


def _value(point: rollups.Point, metric: str) -> float:
    value: Any = {"cost": point.cost, "requests": point.requests, "tokens": point.tokens,
                  "errors": point.errors}[metric]  # fmt: skip
    return float(value)


def _chart(
    points: list[rollups.Point], group: str, metric: str, grain: rollups.Grain,
    since: datetime, until: datetime, n: Names,
) -> dict[str, Any]:  # fmt: skip
    """uPlot's data: one x per bucket of the range (empty buckets are zeros, so a quiet
    hour shows as a dip, not a line drawn across it), one series per group."""
    step = timedelta(hours=1) if grain == "hour" else timedelta(days=1)
    xs: list[datetime] = []
    at = since
    while at < until:
        xs.append(at)
        at += step
    index = {x: i for i, x in enumerate(xs)}
    spend: dict[str, Decimal] = {}
    for p in points:
        spend[p.group] = spend.get(p.group, Decimal(0)) + p.cost
    ranked = sorted((g for g in spend if g != OTHERS), key=lambda g: (-spend[g], g))
    shown = ranked[:MAX_SERIES]
    series = {g: [0.0] * len(xs) for g in shown}
    if len(ranked) > MAX_SERIES or OTHERS in spend:
        series[OTHERS] = [0.0] * len(xs)
    for p in points:
        i = index.get(p.bucket)
        if i is None:
            continue
        target = p.group if p.group in series else OTHERS
        series[target][i] += _value(p, metric)
    labels = [_label(g, group, n) for g in series]
    return {
        "x": [int(x.timestamp()) for x in xs],
        "series": [{"label": label, "values": values}
                   for label, values in zip(labels, series.values(), strict=True)],
        "metric": metric,
        "grain": grain,
    }  # fmt: skip


def _label(value: str, group: str, n: Names) -> str:
    if value == OTHERS:
        return "others"
    if group == "none":
        return "all"
    kind = _KINDS.get(group)
    if kind is not None:
        return n.of(kind, value) if value else f"no {group}"  # type: ignore[arg-type]
    return value or "—"
