"""The desk's pre-open environment check: is this machine fit to trade today?

:func:`check_environment` makes every check below and returns a :class:`~.health.HealthReport` of kind
``environment``; a ``RED`` check means the trader must not run (the Airflow operator skips it). Checks, by
``name`` (``subject`` in brackets):

- ``python``: the interpreter against the distribution's ``Requires-Python``. Out of range: ``RED``.
- ``dependency[<package>]``: each installed requirement of the distribution against its declared range. A
  missing package or a version out of range: ``RED``, naming the package, its version and the range.
  Requirements whose markers do not hold here are skipped: those of an extra (``; extra == "gpu"``: an install
  does not record which extras were asked for) and those for another platform or Python.
- ``store``: reachable and at the latest schema version: ``GREEN``; behind (an empty store included):
  ``YELLOW``, since the store migrates itself when a task first opens it; newer than this code, unreachable
  or unreadable: ``RED``.
- ``session[<exchange>]``: the exchange has a session on ``now``'s date in the exchange's own time zone
  (New York for ``XNYS``): ``GREEN``; no session (a weekend, a holiday): ``YELLOW``, since nothing trades and
  nothing is wrong; an unknown calendar: ``RED``.
- ``kill_switch``: ``active`` ``GREEN``, ``reduce_only`` ``YELLOW``, ``halted`` ``RED``; any other value reads as
  ``halted`` (:func:`~airflow_provider_portfolio.trading.risk.normalise_kill_switch`) and is ``RED``.
- ``disk[<label>]``: free space where each path lives: below ``min_free_bytes`` ``RED`` (default 1 GiB), below
  ``min_free_fraction`` of the disk ``YELLOW`` (default 5 %).

Plain Python: no Airflow. Callers pass what they read from Airflow (the store, the kill switch) and may
append their own checks (``extra_checks``).
"""

from __future__ import annotations

import importlib.metadata
import math
import platform
import shutil
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from airflow_provider_portfolio.desk.health import Check, HealthReport, Level
from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.market.timeutil import DEFAULT_EXCHANGE, ensure_utc

if TYPE_CHECKING:
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet

    from airflow_provider_portfolio.store import PortfolioStore

__all__ = [
    "DEFAULT_MIN_FREE_BYTES", "DEFAULT_MIN_FREE_FRACTION", "DISTRIBUTION", "check_disk_limits", "check_environment",
    "dependency_checks", "disk_check", "kill_switch_check", "session_check", "store_check",
]

#: The distribution whose declared ranges are checked.
DISTRIBUTION = "airflow-provider-portfolio"
#: Free space below which a disk is ``RED`` (1 GiB).
DEFAULT_MIN_FREE_BYTES = 1 << 30
#: Share of a disk that must be free, else ``YELLOW``.
DEFAULT_MIN_FREE_FRACTION = 0.05


def check_environment(*, now: datetime, store: PortfolioStore | None = None, store_error: str | None = None,
                      exchange: str = DEFAULT_EXCHANGE, kill_switch: object = "active",
                      disk_paths: Mapping[str, str] | None = None, min_free_bytes: float = DEFAULT_MIN_FREE_BYTES,
                      min_free_fraction: float = DEFAULT_MIN_FREE_FRACTION, distribution: str = DISTRIBUTION,
                      extra_checks: Sequence[Check] = ()) -> HealthReport:
    """Every environment check (see the module docstring), then ``extra_checks``, as one report.

    :param now: the instant of the check (tz-aware); its date in the exchange's time zone is "today".
    :param store: the store to look at, opened without migrating it; ``None`` with no ``store_error``: no
        store check.
    :param store_error: why the store could not even be opened (a missing connection...): a ``RED`` check.
    :param exchange: the calendar whose session today is checked.
    :param kill_switch: the kill switch as stored (Variable ``portfolio.kill_switch``).
    :param disk_paths: label -> path whose disk's free space is checked (``{"store": ..., "logs": ...}``); a
        path that does not exist yet is measured at its nearest existing parent.
    :param min_free_bytes: free bytes below which a disk is ``RED``.
    :param min_free_fraction: free share of a disk below which it is ``YELLOW``, in [0, 1].
    :param distribution: the installed distribution whose Python and dependency ranges are checked.
    :param extra_checks: checks made by the caller (provider config, connections), appended.
    :raises InvalidInputError: naming the parameter, for a naive ``now``, bad limits, a bad ``disk_paths``, an
        empty ``exchange`` or ``distribution``, or an ``extra_checks`` item that is not a :class:`Check`.
    """
    now = ensure_utc(now, "now")
    min_free_bytes, min_free_fraction = check_disk_limits(min_free_bytes, min_free_fraction)
    paths = _disk_paths(disk_paths)
    if not isinstance(exchange, str) or not exchange.strip():
        raise InvalidInputError(f"exchange must be a calendar name such as {DEFAULT_EXCHANGE!r}, got {exchange!r}")
    if not isinstance(distribution, str) or not distribution.strip():
        raise InvalidInputError(f"distribution must be a distribution name, got {distribution!r}")
    extra = list(extra_checks)
    if not all(isinstance(c, Check) for c in extra):
        raise InvalidInputError(f"extra_checks must be Check objects, got {extra!r}")
    store_checked = store_check(store, store_error)
    checks = [
        *dependency_checks(distribution),
        *([store_checked] if store_checked is not None else []),
        session_check(exchange, now),
        kill_switch_check(kill_switch),
        *(disk_check(label, path, min_free_bytes=min_free_bytes, min_free_fraction=min_free_fraction)
          for label, path in paths.items()),
        *extra,
    ]
    return HealthReport("environment", now, tuple(checks))


def check_disk_limits(min_free_bytes: object, min_free_fraction: object) -> tuple[int, float]:
    """The disk limits, checked: ``min_free_bytes`` a number >= 0, ``min_free_fraction`` in [0, 1].

    :raises InvalidInputError: naming the limit and its value.
    """
    checked = []
    for name, value, high in (("min_free_bytes", min_free_bytes, math.inf),
                              ("min_free_fraction", min_free_fraction, 1.0)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
                or not 0 <= value <= high:
            bound = "a number of bytes >= 0" if high == math.inf else "a fraction in [0, 1]"
            raise InvalidInputError(f"{name} must be {bound}, got {value!r}")
        checked.append(value)
    return int(checked[0]), float(checked[1])


def _disk_paths(disk_paths: Mapping[str, str] | None) -> dict[str, str]:
    if disk_paths is None:
        return {}
    if not isinstance(disk_paths, Mapping) or not all(
            isinstance(k, str) and k.strip() and isinstance(v, str | Path) and str(v).strip()
            for k, v in disk_paths.items()):
        raise InvalidInputError(f"disk_paths must map labels to paths, got {disk_paths!r}")
    return {k.strip(): str(v) for k, v in disk_paths.items()}


# -- versions -----------------------------------------------------------------------------------------------
def dependency_checks(distribution: str = DISTRIBUTION) -> list[Check]:
    """``python`` against ``Requires-Python``, then one ``dependency`` check per requirement whose markers hold
    here (no extra asked for).

    :param distribution: an installed distribution; not installed: one ``RED`` check saying so.
    """
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        meta = importlib.metadata.metadata(distribution)
        requires = importlib.metadata.requires(distribution) or []
    except importlib.metadata.PackageNotFoundError:
        return [Check("dependency", Level.RED, None, None,
                      f"distribution {distribution!r} is not installed: its Python and dependency ranges cannot be "
                      "checked; pip install it", distribution)]
    checks = [_python_check((meta.get_all("Requires-Python") or [None])[0])]
    for line in requires:
        try:
            req = Requirement(line)
        except InvalidRequirement as err:
            checks.append(Check("dependency", Level.RED, None, line,
                                f"{distribution} declares a requirement that cannot be read ({line!r}: {err})"))
            continue
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            checks.append(_requirement_check(req))
    return checks


def _in_range(installed: str, specifier: SpecifierSet) -> bool | None:
    """Whether version ``installed`` lies in ``specifier`` (pre-releases count); ``None`` when unparseable."""
    from packaging.version import InvalidVersion, Version

    try:
        return specifier.contains(Version(installed), prereleases=True)
    except InvalidVersion:
        return None


def _python_check(requires_python: str | None) -> Check:
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    version = platform.python_version()
    if not requires_python:
        return Check("python", Level.GREEN, version, None, f"Python {version}; no range declared")
    try:
        inside = _in_range(version, SpecifierSet(requires_python))
    except InvalidSpecifier:
        inside = None
    if inside:
        return Check("python", Level.GREEN, version, requires_python, f"Python {version} within {requires_python}")
    return Check("python", Level.RED, version, requires_python,
                 f"Python {version} is outside the declared range {requires_python}: run a supported Python")


def _requirement_check(req: Requirement) -> Check:
    spec = str(req.specifier) or "any version"
    try:
        installed = importlib.metadata.version(req.name)
    except importlib.metadata.PackageNotFoundError:
        return Check("dependency", Level.RED, None, spec,
                     f"{req.name} is not installed (required: {spec}): pip install '{req.name}{req.specifier}'",
                     req.name)
    inside = _in_range(installed, req.specifier)
    if inside:
        return Check("dependency", Level.GREEN, installed, spec, f"{req.name} {installed} within {spec}", req.name)
    why = "is not a version number" if inside is None else "is outside the declared range"
    return Check("dependency", Level.RED, installed, spec,
                 f"{req.name} {installed} {why} {spec}: pip install '{req.name}{req.specifier}'", req.name)


# -- store --------------------------------------------------------------------------------------------------
def store_check(store: PortfolioStore | None, store_error: str | None = None) -> Check | None:
    """Whether the store answers and is at the latest schema version (``None``: no store given, no error).

    :param store: a store opened without migrating it.
    :param store_error: why the store could not be opened: ``RED`` with that reason.
    """
    from airflow_provider_portfolio.store.schema import latest_version

    latest = latest_version()
    if store_error is not None:
        return Check("store", Level.RED, None, latest, f"store cannot be opened: {store_error}")
    if store is None:
        return None
    try:
        version = store.schema_version()
    except Exception as err:  # unreachable, unreadable: never green in doubt
        return Check("store", Level.RED, None, latest, f"store {store.url} is unreachable: {err}")
    if version == latest:
        return Check("store", Level.GREEN, version, latest, f"store {store.url} reachable at schema version {version}")
    if version > latest:
        return Check("store", Level.RED, version, latest,
                     f"store {store.url} is at schema version {version}, newer than this code knows ({latest}): "
                     "upgrade airflow-provider-portfolio")
    return Check("store", Level.YELLOW, version, latest,
                 f"store {store.url} is at schema version {version}, behind {latest}: the first task that opens it "
                 "migrates it (or run PortfolioStore.migrate() now)")


# -- session ------------------------------------------------------------------------------------------------
def session_check(exchange: str, now: datetime) -> Check:
    """Whether ``exchange`` has a session on ``now``'s date in its own time zone (New York for ``XNYS``).

    :param exchange: a calendar name (``XNYS``, ``XLON``, ``24/7``).
    :param now: a tz-aware instant.
    """
    from zoneinfo import ZoneInfo

    from airflow_provider_portfolio.market.calendar import MarketCalendar

    now = ensure_utc(now, "now")
    try:
        calendar = MarketCalendar(exchange)
        tz = ZoneInfo(calendar.timezone)
        today = now.astimezone(tz).date()
        sessions = calendar.sessions(today, today)
        next_open = None if len(sessions) else calendar.next_open(now).tz_convert(tz)
    except Exception as err:  # an unknown calendar (its message lists every name: keep the first sentences)
        reason = str(err).split(" Valid names:")[0]
        return Check("session", Level.RED, None, None, f"calendar {exchange!r} cannot be read: {reason}", exchange)
    name = calendar.name
    if len(sessions):
        opens, closes = (sessions[col].iloc[0].tz_convert(tz) for col in ("market_open", "market_close"))
        return Check("session", Level.GREEN, today.isoformat(), None,
                     f"{name} has a session on {today:%a %Y-%m-%d}: {opens:%H:%M}-{closes:%H:%M} {tz.key}", name)
    return Check("session", Level.YELLOW, None, None,
                 f"{name} has no session on {today:%a %Y-%m-%d} ({tz.key}): a weekend or holiday, nothing trades; "
                 f"next open {next_open:%a %Y-%m-%d %H:%M}", name)


# -- kill switch --------------------------------------------------------------------------------------------
def kill_switch_check(value: object) -> Check:
    """The kill switch's state: ``active`` ``GREEN``, ``reduce_only`` ``YELLOW``, ``halted`` or unknown ``RED``.

    :param value: the stored value (text), as the trader reads it.
    """
    from airflow_provider_portfolio.trading.risk import KILL_SWITCH_STATES, normalise_kill_switch

    state = normalise_kill_switch(value)
    shown = value if isinstance(value, str) or value is None else repr(value)
    if state == "active":
        return Check("kill_switch", Level.GREEN, state, "active", "kill switch active: trading normally")
    if state == "reduce_only":
        return Check("kill_switch", Level.YELLOW, state, "active",
                     "kill switch reduce_only: only orders that shrink a position are sent")
    if isinstance(value, str) and value.strip().lower() == "halted":
        return Check("kill_switch", Level.RED, state, "active",
                     "kill switch halted: no orders at all (set Variable portfolio.kill_switch to active to trade)")
    return Check("kill_switch", Level.RED, shown, "active",
                 f"kill switch {shown!r} is no known state ({', '.join(KILL_SWITCH_STATES)}): the trader treats it "
                 "as halted")


# -- disk ---------------------------------------------------------------------------------------------------
def disk_check(label: str, path: str | Path, *, min_free_bytes: int = DEFAULT_MIN_FREE_BYTES,
               min_free_fraction: float = DEFAULT_MIN_FREE_FRACTION) -> Check:
    """Free space of the disk holding ``path`` (its nearest existing parent when it does not exist yet).

    :param label: what the path is (``store``, ``logs``): the check's subject.
    :param path: a file or folder.
    :param min_free_bytes: below this many free bytes: ``RED``.
    :param min_free_fraction: below this share free: ``YELLOW``.
    """
    threshold = {"min_free_bytes": min_free_bytes, "min_free_fraction": min_free_fraction}
    target = Path(path).expanduser()
    probe = next((p for p in (target, *target.parents) if p.exists()), target)
    try:
        usage = shutil.disk_usage(probe)
    except OSError as err:
        return Check("disk", Level.RED, None, threshold,
                     f"{label} ({target}): free space cannot be read: {err.strerror or err}", label)
    fraction = usage.free / usage.total if usage.total else 0.0
    where = f"{label} ({target}): {_size(usage.free)} free, {fraction:.1%} of {_size(usage.total)}"
    if usage.free < min_free_bytes:
        return Check("disk", Level.RED, usage.free, threshold,
                     f"{where}, below {_size(min_free_bytes)}: free space before trading", label)
    if fraction < min_free_fraction:
        return Check("disk", Level.YELLOW, usage.free, threshold, f"{where}, below {min_free_fraction:.0%}", label)
    return Check("disk", Level.GREEN, usage.free, threshold, where, label)


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
