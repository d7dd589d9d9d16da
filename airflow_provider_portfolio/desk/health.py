"""Checks and their levels: the one shape of every environment check and health report.

A :class:`Check` is one measured fact with the threshold it was judged against and the level it earned;
a :class:`HealthReport` is a list of checks whose level is the worst of theirs. Both turn into plain JSON
(:meth:`HealthReport.to_dict`), which is what the store's ``health_reports`` table, the task's XCom, the
notifications and the metrics carry.

Levels, from best to worst: ``GREEN`` (within limits), ``YELLOW`` (worth a look, trading goes on) and
``RED`` (trading must not run on this: the desk's gate skips the trader). A check that could not be made
(an unreachable store, an exception) is ``RED`` with the reason in its message: never green in doubt.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum
from typing import Any

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.market.timeutil import ensure_utc


class Level(IntEnum):
    """A check's verdict; larger is worse, so ``max`` of levels is the overall level."""

    GREEN = 0
    YELLOW = 1
    RED = 2

    @classmethod
    def parse(cls, value: object) -> Level:
        """A level from its name (any case) or itself.

        :raises ValueError: naming the value, for anything else.
        """
        if isinstance(value, Level):
            return value
        if isinstance(value, str) and value.strip().upper() in cls.__members__:
            return cls[value.strip().upper()]
        raise ValueError(f"a health level is one of {list(cls.__members__)}, got {value!r}")


def worst(levels: Iterable[Level]) -> Level:
    """The worst of ``levels`` (``GREEN`` when there are none)."""
    return max(levels, default=Level.GREEN)


def _json_number(value: Any) -> Any:
    """``value`` made JSON-safe: a non-finite float becomes ``None``; numpy scalars become Python numbers."""
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass(frozen=True)
class Check:
    """One measured fact and its verdict.

    :param name: what was checked, e.g. ``freshness``, ``store_integrity``, ``sharpe``.
    :param level: the verdict.
    :param value: what was measured (a number, a string, a bool or ``None`` when it could not be measured).
    :param threshold: what it was judged against (a number, a ``{"yellow": .., "red": ..}`` mapping, a range
        as text...), ``None`` for a check without one.
    :param message: one line a person reads: the fact, the limit and what to do.
    :param subject: what the check is about where there are many (a symbol, a vendor connection, a package).
    """

    name: str
    level: Level
    value: Any = None
    threshold: Any = None
    message: str = ""
    subject: str | None = None

    @property
    def failed(self) -> bool:
        """``True`` for a ``RED`` check."""
        return self.level is Level.RED

    @property
    def label(self) -> str:
        """``name`` or ``name[subject]``."""
        return f"{self.name}[{self.subject}]" if self.subject else self.name

    def to_dict(self) -> dict[str, Any]:
        threshold = self.threshold
        if isinstance(threshold, Mapping):
            threshold = {str(k): _json_number(v) for k, v in threshold.items()}
        else:
            threshold = _json_number(threshold)
        out = {"name": self.name, "level": self.level.name, "value": _json_number(self.value),
               "threshold": threshold, "message": self.message}
        if self.subject is not None:
            out["subject"] = self.subject
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Check:
        return cls(name=str(data["name"]), level=Level.parse(data["level"]), value=data.get("value"),
                   threshold=data.get("threshold"), message=str(data.get("message", "")), subject=data.get("subject"))


def graded(name: str, value: float | None, *, yellow: float, red: float, higher_is_worse: bool = True,
           unit: str = "", subject: str | None = None, what: str | None = None) -> Check:
    """A check of a number against a YELLOW and a RED limit (reached = that level).

    :param value: the measurement; ``None`` or non-finite gives ``RED`` ("could not be measured").
    :param yellow: the limit from which the check is ``YELLOW``.
    :param red: the limit from which it is ``RED``.
    :param higher_is_worse: ``True`` when larger values are worse (a staleness, a drawdown); ``False`` for
        numbers where smaller is worse (a share of healthy models, a Sharpe ratio).
    :param unit: appended to numbers in the message.
    :param what: how the message names the measurement (default ``name``).
    """
    label = what or name
    threshold = {"yellow": yellow, "red": red}
    if value is None or not math.isfinite(float(value)):
        return Check(name, Level.RED, None, threshold, f"{label}: could not be measured", subject)
    v = float(value)
    if higher_is_worse:
        level = Level.RED if v >= red else Level.YELLOW if v >= yellow else Level.GREEN
        cmp = ">="
    else:
        level = Level.RED if v <= red else Level.YELLOW if v <= yellow else Level.GREEN
        cmp = "<="
    if level is Level.GREEN:
        message = f"{label} {v:g}{unit} within limits (yellow {cmp} {yellow:g}{unit}, red {cmp} {red:g}{unit})"
    else:
        limit = red if level is Level.RED else yellow
        message = f"{label} {v:g}{unit} {cmp} {level.name} limit {limit:g}{unit}"
    return Check(name, level, v, threshold, message, subject)


@dataclass(frozen=True)
class HealthReport:
    """Checks made at one instant; its level is the worst of theirs.

    :param kind: what made it: ``monitoring`` (the hourly health report) or ``environment`` (env sanity).
    :param ts: when (UTC).
    :param checks: every check, green ones included.
    """

    kind: str
    ts: datetime
    checks: tuple[Check, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ts", ensure_utc(self.ts))
        object.__setattr__(self, "checks", tuple(self.checks))

    @property
    def level(self) -> Level:
        return worst(c.level for c in self.checks)

    @property
    def ok(self) -> bool:
        """``True`` when no check is ``RED``."""
        return self.level is not Level.RED

    def at(self, level: Level) -> list[Check]:
        """The checks at ``level``."""
        return [c for c in self.checks if c.level is level]

    @property
    def failed(self) -> list[Check]:
        """The ``RED`` checks."""
        return self.at(Level.RED)

    def summary(self) -> str:
        """One line: the level and every check that is not green."""
        bad = [c for c in self.checks if c.level is not Level.GREEN]
        if not bad:
            return f"{self.kind} {self.level.name}: all {len(self.checks)} check(s) green"
        return f"{self.kind} {self.level.name}: " + "; ".join(f"{c.level.name} {c.label}: {c.message}" for c in bad)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "ts": self.ts.isoformat(), "level": self.level.name,
                "failed": [c.label for c in self.failed], "checks": [c.to_dict() for c in self.checks]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HealthReport:
        return cls(kind=str(data["kind"]), ts=ensure_utc(datetime.fromisoformat(str(data["ts"]))),
                   checks=tuple(Check.from_dict(c) for c in data.get("checks", ())))


#: What each kind of threshold accepts (:func:`checked_thresholds`).
_KIND_RULES: dict[str, tuple[Any, str]] = {
    "fraction": (lambda v: 0 <= v <= 1, "a fraction from 0 to 1"),
    "share": (lambda v: 0 < v <= 1, "a number in (0, 1]"),
    "positive": (lambda v: v > 0, "a number > 0"),
    "bars": (lambda v: v >= 0, ">= 0"),
    "minutes": (lambda v: v >= 0, ">= 0"),
    "days": (lambda v: v >= 0, ">= 0"),
    "ratio": (lambda v: True, "a number"),
}


def checked_thresholds(values: Mapping[str, Any], setting: str, kinds: Mapping[str, tuple[str, bool]],
                       pairs: Iterable[tuple[str, str, bool]] = ()) -> dict[str, Any]:
    """Threshold settings checked key by key and pair by pair (the health report's and the risk audit's).

    :param values: key -> value, every key one of ``kinds``.
    :param setting: what the values are called in messages (a Variable, a class).
    :param kinds: key -> (kind, may be null); kinds: ``count`` (a whole number >= 1), ``fraction`` (0..1),
        ``share`` (0 < x <= 1), ``positive`` (> 0), ``bars``/``minutes``/``days`` (>= 0), ``ratio`` (any number).
    :param pairs: (yellow key, red key, higher is worse): a YELLOW limit must come before its RED one.
    :returns: the values, counts as ``int``.
    :raises InvalidInputError: naming ``setting``, the key and the value.
    """
    out: dict[str, Any] = {}
    for key, value in values.items():
        kind, nullable = kinds[key]
        where = f"{setting}: {key}"
        if value is None and nullable:
            out[key] = None
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            off = " or null (off)" if nullable else ""
            raise InvalidInputError(f"{where} must be a finite number{off}, got {value!r}")
        if kind == "count":
            if value != int(value) or value < 1:
                raise InvalidInputError(f"{where} must be a whole number >= 1, got {value!r}")
        else:
            accepts, what = _KIND_RULES[kind]
            if not accepts(value):
                raise InvalidInputError(f"{where} must be {what}, got {value!r}")
        out[key] = int(value) if kind == "count" else value
    for yellow, red, higher_is_worse in pairs:
        y, r = out.get(yellow), out.get(red)
        if y is not None and r is not None and (y > r if higher_is_worse else y < r):
            word = "above" if higher_is_worse else "below"
            raise InvalidInputError(f"{setting}: {yellow}={y!r} is {word} {red}={r!r}; a YELLOW limit comes before "
                                    f"its RED one ({'higher' if higher_is_worse else 'lower'} is worse)")
    return out
