"""Transaction costs measured from the ledger's order and fill history, and the simulated broker's costs they feed.

:func:`estimate_costs` is the job (the ``TransactionCostsOperator`` calls it; so can a notebook or a container). It
reads every filled order of a window (:meth:`~airflow_provider_portfolio.store.repository.PortfolioStore.executions`:
the window goes by the order's ``created_at``, the cycle's instant) and measures, per symbol and per asset class
(``equity``, or ``crypto`` for pairs such as ``BTC/USD``):

- ``fills``, ``notional`` (``qty * price`` summed);
- ``commission``: the sum of the fills' recorded commissions and ``commission_bps`` = that sum / the notional of
  those fills * 10,000 (a real broker's fill without a ``fills`` row has no recorded commission: it counts in
  ``fills`` and ``notional`` but not here; ``commission_known`` says how many did);
- slippage in basis points of each fill against its order's reference price (the decision's price),
  signed against the side: ``(price - ref_price) / ref_price * 10,000`` for a buy and its negative for a sell, so a
  buy above the reference or a sell below it is a positive cost. It measures everything between the decision and
  the fill (for a daily decision: the move from the decided bar's close to the next open, plus the broker's own
  slippage). ``slippage_bps_mean``, ``_median``, ``_p90`` (NumPy's linear interpolation) over the fills with a
  reference price, and ``slippage_bps`` = the notional-weighted mean (the cost per unit of notional, what the
  simulated broker's ``slippage_bps`` means).

An estimate from fewer than ``min_fills`` fills is flagged (``enough`` false) and recommends nothing. The
recommendation is, per asset class with enough fills, ``{"commission_bps": ..., "slippage_bps": ...}`` (each only
when measured from ``min_fills`` fills; slippage floored at 0: the simulated broker never improves a price). The
results are stored as a study of kind ``transaction_costs`` (points ``symbol:<symbol>`` and
``asset_class:<class>``) and returned as a :class:`CostReport`. Nothing is applied here: the operator writes the
recommendation to the simulated broker's costs only when asked (``apply=True``).

:func:`parse_simulated_costs` reads the simulated costs per asset class (what Variable ``portfolio.simulated_costs``
holds) and :func:`costs_for_universe` picks the costs of a universe from them: for each of commission and slippage,
the highest over the universe's asset classes (a class without a value counts as the given default), so a mixed
book is never simulated cheaper than its dearest class.

Plain Python: never imports Airflow; NumPy is imported when a job runs.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from airflow_provider_portfolio.exceptions import InvalidInputError
from airflow_provider_portfolio.market.params import is_crypto, json_object
from airflow_provider_portfolio.market.timeutil import ensure_utc, utc_now

if TYPE_CHECKING:
    import numpy as np

    from airflow_provider_portfolio.store.repository import PortfolioStore

log = logging.getLogger(__name__)

__all__ = ["ASSET_CLASSES", "COSTS_STUDY", "COST_KEYS", "DEFAULT_MIN_FILLS", "CostEstimate", "CostReport",
           "asset_class", "costs_for_universe", "estimate_costs", "parse_simulated_costs"]

#: The kind of the study a cost run stores.
COSTS_STUDY = "transaction_costs"
#: Asset classes costs are estimated for.
ASSET_CLASSES: tuple[str, ...] = ("equity", "crypto")
#: The simulated broker's cost settings a recommendation holds.
COST_KEYS: tuple[str, ...] = ("commission_bps", "slippage_bps")
#: Fills below which an estimate is flagged and recommends nothing.
DEFAULT_MIN_FILLS = 20
#: The largest cost setting accepted, basis points (100 %).
_MAX_BPS = 10_000.0

_now = utc_now


def asset_class(symbol: str) -> str:
    """``crypto`` for a pair (``BTC/USD``), else ``equity``."""
    return "crypto" if is_crypto(symbol) else "equity"


@dataclass(frozen=True)
class CostEstimate:
    """The costs of one symbol or asset class (see the module docstring); ``None`` where nothing was measured.

    :param name: the symbol or the asset class.
    :param asset_class: ``equity`` or ``crypto``.
    :param enough: whether ``fills`` reached the minimum sample size.
    """

    name: str
    asset_class: str
    fills: int
    notional: float
    commission: float | None
    commission_bps: float | None
    commission_known: int
    slippage_bps: float | None
    slippage_bps_mean: float | None
    slippage_bps_median: float | None
    slippage_bps_p90: float | None
    slippage_known: int
    buys: int
    sells: int
    enough: bool

    def to_dict(self) -> dict[str, Any]:
        """The estimate as plain JSON."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class CostReport:
    """What :func:`estimate_costs` measured.

    :param study_id: the stored study (kind ``transaction_costs``).
    :param ts: the study's instant (``until``, else when it ran).
    :param since: the window's start (``None``: all history).
    :param account: the ledger account (``None``: every account).
    :param status: ``ok``, or ``insufficient_data`` when no asset class had ``min_fills`` fills.
    :param fills: filled orders read.
    :param symbols: per-symbol estimates.
    :param asset_classes: per-asset-class estimates.
    :param recommended: asset class -> the simulated broker's costs it recommends (``None``: none).
    :param min_fills: the minimum sample size.
    :param message: one line for the log.
    """

    study_id: str
    ts: datetime
    since: datetime | None
    account: str | None
    status: str
    fills: int
    symbols: dict[str, CostEstimate] = field(default_factory=dict)
    asset_classes: dict[str, CostEstimate] = field(default_factory=dict)
    recommended: dict[str, dict[str, float]] | None = None
    min_fills: int = DEFAULT_MIN_FILLS
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A small JSON summary (the operator's XCom): per asset class and the recommendation, not per symbol."""
        return {"study_id": self.study_id, "ts": self.ts.isoformat(),
                "since": None if self.since is None else self.since.isoformat(), "account": self.account,
                "status": self.status, "fills": self.fills, "symbols": len(self.symbols),
                "asset_classes": {k: v.to_dict() for k, v in self.asset_classes.items()},
                "recommended": self.recommended, "min_fills": self.min_fills, "message": self.message}


# -- estimating ---------------------------------------------------------------------------------------------
def _estimate(name: str, cls: str, side: np.ndarray, qty: np.ndarray, price: np.ndarray, ref: np.ndarray,
              commission: np.ndarray, min_fills: int) -> CostEstimate:
    import numpy as np

    notional = np.abs(qty * price)
    known = np.isfinite(commission)
    commission_sum = float(commission[known].sum()) if known.any() else None
    commission_notional = float(notional[known].sum())
    commission_bps = (commission_sum / commission_notional * 10_000.0
                      if commission_sum is not None and commission_notional > 0 else None)
    sign = np.where(side == "buy", 1.0, -1.0)
    has_ref = np.isfinite(ref) & (ref > 0)
    bps = sign[has_ref] * (price[has_ref] - ref[has_ref]) / ref[has_ref] * 10_000.0
    weights = notional[has_ref]
    n = len(bps)
    return CostEstimate(
        name=name, asset_class=cls, fills=len(qty), notional=float(notional.sum()),
        commission=commission_sum, commission_bps=commission_bps, commission_known=int(known.sum()),
        slippage_bps=float((bps * weights).sum() / weights.sum()) if n and weights.sum() > 0 else None,
        slippage_bps_mean=float(bps.mean()) if n else None,
        slippage_bps_median=float(np.median(bps)) if n else None,
        slippage_bps_p90=float(np.percentile(bps, 90)) if n else None, slippage_known=n,
        buys=int((side == "buy").sum()), sells=int((side != "buy").sum()), enough=len(qty) >= min_fills)


def _recommendation(estimate: CostEstimate, min_fills: int) -> dict[str, float]:
    out: dict[str, float] = {}
    if estimate.commission_bps is not None and estimate.commission_known >= min_fills:
        out["commission_bps"] = round(max(estimate.commission_bps, 0.0), 4)
    if estimate.slippage_bps is not None and estimate.slippage_known >= min_fills:
        out["slippage_bps"] = round(max(estimate.slippage_bps, 0.0), 4)
    return out


def estimate_costs(store: PortfolioStore, *, account: str | None = None, since: datetime | None = None,
                   until: datetime | None = None, min_fills: int = DEFAULT_MIN_FILLS, dag_id: str | None = None,
                   run_id: str | None = None) -> CostReport:
    """Measure commission and slippage per symbol and asset class from the filled orders of a window, and store them
    as a ``transaction_costs`` study (see the module docstring). Nothing is applied.

    :param store: a migrated portfolio store.
    :param account: one ledger account (``simulated:default``, ``alpaca:alpaca_default``); ``None``: every account.
    :param since: orders created at or after this instant (aware); ``None``: from the first.
    :param until: orders created at or before this instant (aware), also the study's instant; ``None``: now.
    :param min_fills: fills an estimate needs before it recommends anything (>= 1).
    :param dag_id: the DAG of the run, stored with the study.
    :param run_id: the run; the study's id is ``<dag_id>/<run_id>`` (a retry of the run replaces its study).
        Default ``manual__<ts>``.
    :return: the estimates; ``status`` ``insufficient_data`` (with a message) when no asset class had ``min_fills``
        fills, an empty history included.
    :raises InvalidInputError: for bad input, before anything is read or written.
    :raises StoreError: when the store cannot be read or written.
    """
    import numpy as np

    start = None if since is None else ensure_utc(since, "since")
    end = None if until is None else ensure_utc(until, "until")
    if start is not None and end is not None and start > end:
        raise InvalidInputError(f"since ({start.isoformat()}) must not be after until ({end.isoformat()})")
    if isinstance(min_fills, bool) or not isinstance(min_fills, int) or min_fills < 1:
        raise InvalidInputError(f"min_fills must be a whole number >= 1, got {min_fills!r}")
    if account is not None and (not isinstance(account, str) or not account.strip()):
        raise InvalidInputError(f"account must be a ledger account name such as 'simulated:default', got {account!r}")
    for value, name in ((dag_id, "dag_id"), (run_id, "run_id")):
        if value is not None and (not isinstance(value, str) or not value.strip() or len(value) > 200):
            raise InvalidInputError(f"{name} must be non-empty text of at most 200 characters, got {value!r}")
    ts = end or _now()
    run = run_id or f"manual__{ts.isoformat()}"
    study_id = f"{dag_id}/{run}" if dag_id else run

    frame = store.executions(account=account, since=start, until=end)
    symbols: dict[str, CostEstimate] = {}
    classes: dict[str, CostEstimate] = {}
    if len(frame):
        side = frame["side"].to_numpy(dtype=str)
        qty, price = frame["qty"].to_numpy(np.float64), frame["price"].to_numpy(np.float64)
        ref, commission = frame["ref_price"].to_numpy(np.float64), frame["commission"].to_numpy(np.float64)
        names = frame["symbol"].to_numpy(dtype=str)
        cls_of = np.array([asset_class(s) for s in names], dtype=object)
        for symbol in sorted(set(names)):
            rows = names == symbol
            symbols[symbol] = _estimate(symbol, asset_class(symbol), side[rows], qty[rows], price[rows], ref[rows],
                                        commission[rows], min_fills)
        for cls in ASSET_CLASSES:
            rows = cls_of == cls
            if rows.any():
                classes[cls] = _estimate(cls, cls, side[rows], qty[rows], price[rows], ref[rows], commission[rows],
                                         min_fills)
    recommended = {cls: rec for cls, est in classes.items() if est.enough and (rec := _recommendation(est, min_fills))}
    status = "ok" if recommended else "insufficient_data"
    window = (f"{'the start' if start is None else start.isoformat()} to "
              f"{'now' if end is None else end.isoformat()}")
    who = account or "every account"
    if not len(frame):
        message = f"no filled orders of {who} from {window}: no cost to measure"
    else:
        parts = [f"{cls} {est.fills} fill(s)" + ("" if est.enough else f" (fewer than {min_fills}: flagged)")
                 for cls, est in classes.items()]
        message = f"{len(frame)} filled order(s) of {who} from {window}: {', '.join(parts)}"
        if recommended:
            message += "; recommended " + "; ".join(
                f"{cls} {', '.join(f'{k} {v:g}' for k, v in rec.items())}" for cls, rec in recommended.items())
    points = [{"point": f"symbol:{s}", "params": {"symbol": s, "asset_class": e.asset_class}, "metrics": e.to_dict()}
              for s, e in symbols.items()]
    points += [{"point": f"asset_class:{c}", "params": {"asset_class": c}, "metrics": e.to_dict()}
               for c, e in classes.items()]
    summary = {"fills": int(len(frame)), "symbols": len(symbols),
               "asset_classes": {c: e.to_dict() for c, e in classes.items()}, "message": message}
    params = {"account": account, "since": None if start is None else start.isoformat(),
              "until": None if end is None else end.isoformat(), "min_fills": min_fills,
              "slippage_reference": "order ref_price, signed against the side"}
    store.save_study(COSTS_STUDY, study_id, ts=ts, params=params, summary=summary, status=status,
                     recommended=recommended or None, points=points, dag_id=dag_id, run_id=run_id)
    log.info("transaction costs %s: %s", status, message)
    return CostReport(study_id, ts, start, account, status, int(len(frame)), symbols, classes, recommended or None,
                      min_fills, message)


# -- the simulated broker's costs ---------------------------------------------------------------------------
def parse_simulated_costs(value: Mapping[str, Any] | str | None,
                          setting: str = "simulated costs") -> dict[str, dict[str, float]]:
    """Simulated costs per asset class: ``{"equity": {"commission_bps": 1.0, "slippage_bps": 4.2}, "crypto": {...}}``
    (either class, either key may be missing).

    :param value: a mapping or its JSON text; ``None``, ``""`` and ``{}`` are none.
    :param setting: how messages name where it came from (the Variable).
    :raises InvalidInputError: naming the setting, the key and the value: text that is not a JSON object, an unknown
        asset class or key, a value that is not a number from 0 to 10,000 basis points.
    """
    value = json_object(value, setting, example='{"equity": {"slippage_bps": 5}}', what="asset classes")
    out: dict[str, dict[str, float]] = {}
    for cls, costs in value.items():
        if cls not in ASSET_CLASSES:
            raise InvalidInputError(f"{setting}: unknown asset class {cls!r}; the classes are "
                                    f"{', '.join(ASSET_CLASSES)}")
        if not isinstance(costs, Mapping):
            raise InvalidInputError(f"{setting}: {cls} must be an object with {' and/or '.join(COST_KEYS)}, got "
                                    f"{costs!r}")
        out[cls] = {}
        for key, number in costs.items():
            if key not in COST_KEYS:
                raise InvalidInputError(f"{setting}: {cls}: unknown key {key!r}; the keys are {', '.join(COST_KEYS)}")
            if isinstance(number, bool) or not isinstance(number, int | float) or not math.isfinite(number) \
                    or not 0 <= number <= _MAX_BPS:
                raise InvalidInputError(f"{setting}: {cls}.{key} must be a number of basis points from 0 to "
                                        f"{_MAX_BPS:g}, got {number!r}")
            out[cls][key] = float(number)
    return out


def costs_for_universe(symbols: Iterable[str], costs: Mapping[str, Mapping[str, float]], *,
                       commission_bps: float, slippage_bps: float) -> dict[str, float]:
    """The simulated broker's ``commission_bps`` and ``slippage_bps`` for a universe: for each, the highest over the
    universe's asset classes of the class's value in ``costs``, a class without one counting as the default given.

    :param symbols: the universe (an empty one gets the defaults).
    :param costs: :func:`parse_simulated_costs`' result.
    :param commission_bps: the default commission.
    :param slippage_bps: the default slippage.
    """
    defaults = {"commission_bps": float(commission_bps), "slippage_bps": float(slippage_bps)}
    classes: Sequence[str] = sorted({asset_class(s) for s in symbols})
    if not classes:
        return defaults
    return {key: max(float(costs.get(cls, {}).get(key, default)) for cls in classes)
            for key, default in defaults.items()}
